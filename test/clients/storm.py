#!/usr/bin/env python3
"""Kill-storm clients (test/killstorm.test.ts). Each takes and returns tokens until it is
killed or its lifetime ends; none of them ever writes a byte it did not read.

Usage: storm.py PATH KIND LIFETIME_S SEED
  blocking  blocking reads (jobserver-rs, pytest-jobserver style)
  poller    O_NONBLOCK + poll() then read (make, Portage, ninja style)
  threads   four threads doing blocking reads on one shared descriptor
  greedy    takes up to three tokens without blocking, holds them, returns them
  leaker    takes one or two tokens and exits holding them
"""
import errno
import os
import random
import select
import sys
import threading
import time

path, kind, lifetime, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
end = time.monotonic() + lifetime


def hold():
    time.sleep(rnd.uniform(0.005, 0.12))


def blocking_loop(fd, r):
    while time.monotonic() < end:
        b = os.read(fd, 1)
        time.sleep(r.uniform(0.005, 0.12))
        os.write(fd, b)
        time.sleep(r.uniform(0, 0.03))


if kind == "blocking":
    blocking_loop(os.open(path, os.O_RDWR), rnd)

elif kind == "poller":
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    while time.monotonic() < end:
        if not p.poll(rnd.choice([50, 500, -1 if lifetime < 5 else 1000])):
            continue
        try:
            b = os.read(fd, 1)
        except BlockingIOError:
            continue
        hold()
        os.write(fd, b)

elif kind == "threads":
    fd = os.open(path, os.O_RDWR)
    ts = [threading.Thread(target=blocking_loop, args=(fd, random.Random(seed + i)), daemon=True) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

elif kind == "greedy":
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY)
    while time.monotonic() < end:
        got = []
        try:
            for _ in range(3):
                got.append(os.read(r, 1))
        except BlockingIOError:
            pass
        hold()
        for b in got:
            os.write(w, b)
        time.sleep(rnd.uniform(0.01, 0.05))

elif kind == "leaker":
    fd = os.open(path, os.O_RDONLY)
    for _ in range(rnd.choice([1, 2])):
        os.read(fd, 1)
    hold()
    os._exit(0)

else:
    sys.exit("unknown kind " + kind)
