#!/usr/bin/env python3
"""A blocking 1-byte read through libc's read(2), as a plain C client does it (no retry on
EINTR; Python's os.read would hide EINTR by retrying). Usage: rawread.py PATH [retry].
Prints "parked" just before the read, then "got" or "errno NAME"; with "retry" it reads again
after an error and prints the result of that too.
"""
import ctypes
import errno
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDWR)
buf = ctypes.create_string_buffer(1)
retry = len(sys.argv) > 2 and sys.argv[2] == "retry"
while True:
    print("parked", flush=True)
    n = libc.read(fd, buf, 1)
    if n == 1:
        print("got", flush=True)
        break
    print("errno", errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()), flush=True)
    if not retry:
        break
