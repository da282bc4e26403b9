"""N processes that each take a place in steved's status and then start reading the status
document but never finish: the load the status snapshot store is bounded against (issue 14).

    python3 stalled_status_readers.py PATH N hold|park [PADDING]

Each child opens PATH and either takes a token (hold) or parks a blocking read on it from a
thread (park), so the status lists it with this program's command line (PADDING makes that
long). The parent prints "ready" once all N are in place, waits for a line on stdin, lets every
child fetch chunk 0 of the status (STEVED_IOC_STATUS on a new descriptor) and stay, and prints
"fetched F errors E". Then everything sleeps until killed. Run as a script or with python3 -c
(hostile-control.test.ts runs its text as a throw-away user; bench/py/status_readers.py too).
"""

import fcntl
import os
import struct
import sys
import threading
import time

path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
STATUS = (3 << 30) | (8192 << 16) | (ord("j") << 8) | 0x03
up_r, up_w = os.pipe()
go_r, go_w = os.pipe()
for i in range(n):
    if os.fork() == 0:
        os.close(up_r)
        os.close(go_w)
        fd = os.open(path, os.O_RDWR)
        if mode == "hold":
            os.read(fd, 1)
        else:
            threading.Thread(target=lambda: os.read(fd, 1), daemon=True).start()
        os.write(up_w, b"r")
        os.read(go_r, 1)
        fd2 = os.open(path, os.O_RDWR)
        buf = bytearray(struct.pack("<I", 0) + bytes(8188))
        try:
            fcntl.ioctl(fd2, STATUS, buf)
            os.write(up_w, b"f")
        except OSError:
            os.write(up_w, b"e")
        time.sleep(3600)
        os._exit(0)
os.close(up_w)
got = {"r": 0, "f": 0, "e": 0}
while got["r"] < n:
    got[os.read(up_r, 1).decode()] += 1
print("ready", flush=True)
sys.stdin.readline()
os.write(go_w, b"g" * n)
while got["f"] + got["e"] < n:
    got[os.read(up_r, 1).decode()] += 1
print("fetched", got["f"], "errors", got["e"], flush=True)
time.sleep(3600)
