#!/usr/bin/env node
// The jobclient CLI. All logic is in dist/cli.js; this file only wires the real process in.
'use strict'
// `pkill jobclient`, `killall jobclient`, `pgrep -x jobclient` find it by this name (comm).
// The argument vector stays as it is: tools that read /proc/PID/cmdline (steved's status,
// the pytest plugin) look at the separate arguments, which process.title would merge.
try {
  require('node:fs').writeFileSync('/proc/self/comm', 'jobclient')
} catch {
  // Not Linux: the name is a convenience.
}
require('../dist/cli.js')
  .main(process.argv.slice(2))
  .then((status) => {
    process.exitCode = status
  })
