#!/usr/bin/env python3
"""Parse a metrics exposition from stdin with prometheus-client's own parsers and print what
they saw as JSON: {family: {"type": ..., "unit": ..., "samples": [[name, labels, value], ...]}}.

Usage: promparse.py text|openmetrics < exposition
A parse error exits 1 with the parser's message: that is the check.
"""
import json
import math
import sys

fmt = sys.argv[1]
text = sys.stdin.read()
if fmt == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
elif fmt == "text":
    from prometheus_client.parser import text_string_to_metric_families
else:
    sys.exit(f"unknown format {fmt}")

out = {}
try:
    for fam in text_string_to_metric_families(text):
        out[fam.name] = {
            "type": fam.type,
            "unit": getattr(fam, "unit", ""),
            "samples": [
                [s.name, s.labels, None if math.isnan(s.value) else s.value] for s in fam.samples
            ],
        }
except Exception as e:  # the parser's own words
    print(f"parse error: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(out))
