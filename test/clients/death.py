#!/usr/bin/env python3
"""Jobserver clients that watch what happens when steved dies (test/daemon-death.test.ts).

Usage: death.py PATH MODE    Prints one line per event, flushed; errors as errno names.
  hold      read a token, say "held", wait for SIGUSR1, then return it and close
  block     park in a blocking read (the pool is expected empty)
  poll      wait in poll() for POLLIN, then read
  reconnect acquire/return in a loop for ever; on an error close, re-open every 50 ms
"""
import errno
import os
import select
import signal
import sys
import time

path, mode = sys.argv[1], sys.argv[2]


def say(*a):
    print(*a, flush=True)


def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))


if mode == "hold":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    fd = os.open(path, os.O_RDWR)
    b = os.read(fd, 1)
    say("held")
    signal.sigwait([signal.SIGUSR1])
    try:
        os.write(fd, b)
        say("write ok")
    except OSError as e:
        say("write", name(e))
    try:
        os.close(fd)
        say("close ok")
    except OSError as e:
        say("close", name(e))

elif mode == "block":
    fd = os.open(path, os.O_RDONLY)
    say("parking")
    for what in ("read", "read-again"):
        try:
            os.read(fd, 1)
            say(what, "token")
        except OSError as e:
            say(what, name(e))

elif mode == "poll":
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    say("polling")
    ev = p.poll(60000)
    flags = [n for n, v in (("POLLIN", select.POLLIN), ("POLLERR", select.POLLERR), ("POLLHUP", select.POLLHUP)) if ev and ev[0][1] & v]
    say("poll", "|".join(flags) or "timeout")
    try:
        os.read(fd, 1)
        say("read token")
    except OSError as e:
        say("read", name(e))
    try:
        os.open(path, os.O_RDWR)
        say("open ok")
    except OSError as e:
        say("open", name(e))

elif mode == "reconnect":
    # A long-running client (a build farm agent, say) that survives a steved restart.
    fd = None
    n = 0
    while True:
        try:
            if fd is None:
                fd = os.open(path, os.O_RDWR)
                say("opened")
            b = os.read(fd, 1)
            n += 1
            say("acquired", n)
            time.sleep(0.02)
            os.write(fd, b)
        except OSError as e:
            say("error", name(e))
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            fd = None
            time.sleep(0.05)

else:
    sys.exit("unknown mode " + mode)
