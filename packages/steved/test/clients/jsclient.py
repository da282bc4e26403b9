#!/usr/bin/env python3
"""Small jobserver clients with exact syscall patterns, for steved's protocol tests.

Usage: jsclient.py PATH COMMAND [ARGS...]   Prints one result per line, flushed.
Python retries reads interrupted by signals (PEP 475) unless the handler raises, so the
handlers below raise to observe EINTR the way C clients do.
"""
import errno
import os
import select
import signal
import sys
import threading
import time

path, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]


def say(*a):
    print(*a, flush=True)


class Alarm(Exception):
    pass


def on_alarm(*_):
    raise Alarm()


def drain(fd):
    """Take every free token without blocking; return them."""
    flags = os.get_blocking(fd)
    os.set_blocking(fd, False)
    got = []
    try:
        while True:
            got.append(os.read(fd, 1))
    except BlockingIOError:
        pass
    os.set_blocking(fd, flags)
    return got


if cmd == "bigread":
    # A read of 1 MiB still returns exactly one byte.
    fd = os.open(path, os.O_RDONLY)
    b = os.read(fd, 1 << 20)
    say("len", len(b))
    os.write(os.open(path, os.O_WRONLY), b)

elif cmd == "drain-count":
    # Take every free token without blocking, say how many, give them back.
    fd = os.open(path, os.O_RDWR)
    got = drain(fd)
    say("drained", len(got))
    if got:
        os.write(fd, b"".join(got))

elif cmd == "fcntl-nonblock":
    # Opened blocking (like make), switched to O_NONBLOCK later with fcntl.
    fd = os.open(path, os.O_RDONLY)
    os.set_blocking(fd, False)
    got = drain(fd)
    try:
        os.read(fd, 1)
        say("no-eagain")
    except BlockingIOError:
        say("drained", len(got), "then EAGAIN")
    w = os.open(path, os.O_WRONLY)
    for b in got:
        os.write(w, b)

elif cmd == "hold":
    # Read N tokens (blocking), report, then sleep until killed.
    n = int(args[0])
    fd = os.open(path, os.O_RDONLY)
    for _ in range(n):
        os.read(fd, 1)
    say("held", n, os.getpid())
    time.sleep(3600)

elif cmd == "block":
    # One blocking read that parks (the pool is expected empty); report first.
    fd = os.open(path, os.O_RDONLY)
    say("parking", os.getpid())
    b = os.read(fd, 1)
    say("got", b)
    time.sleep(3600)

elif cmd == "interrupt":
    # The pool is empty: a parked blocking read must come back with EINTR on a signal.
    fd = os.open(path, os.O_RDONLY)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(args[0]) if args else 0.3)
    try:
        os.read(fd, 1)
        say("got a token")
    except Alarm:
        say("EINTR")

elif cmd == "poll-empty":
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    say("revents", p.poll(0))

elif cmd == "poll-stay":
    # poll(0) (no notify handle) and stay alive without reading: a reservation that waits.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    say("revents", p.poll(0))
    time.sleep(3600)

elif cmd == "poll-wait":
    # Wait in poll() (a notify handle) for a token, then read it without blocking.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    say("polling")
    while True:
        ev = p.poll(60000)
        try:
            b = os.read(fd, 1)
            say("woke and read", b)
            break
        except BlockingIOError:
            continue

elif cmd == "two-fds":
    # make's pattern: read on an O_RDONLY fd, return on a separate O_WRONLY fd, odd bytes back.
    r = os.open(path, os.O_RDONLY)
    w = os.open(path, os.O_WRONLY)
    a = os.read(r, 1)
    b = os.read(r, 1)
    os.write(w, b"\x00")
    os.write(w, b"\xff")
    say("ok", a, b)

elif cmd == "enospc":
    fd = os.open(path, os.O_RDWR)
    os.write(fd, b"+")  # one early return is allowed before the first read
    say("early return ok")
    try:
        os.write(fd, b"+")
        say("second early return accepted")
    except OSError as e:
        say("second early return", errno.errorcode[e.errno])
    os.read(fd, 1)
    os.read(fd, 1)
    os.write(fd, b"+")
    try:
        os.write(fd, b"++")
        say("over-return accepted")
    except OSError as e:
        say("over-return", errno.errorcode[e.errno])

elif cmd == "thread-hold":
    # A token read by a thread belongs to the process.
    fd = os.open(path, os.O_RDONLY)
    tids = []
    t = threading.Thread(target=lambda: (tids.append(threading.get_native_id()), os.read(fd, 1)))
    t.start()
    t.join()
    say("held", os.getpid(), tids[0])
    time.sleep(3600)

elif cmd == "blocking-loop" or cmd == "polling-loop":
    # Contend for tokens for a while: acquire, hold briefly, return; count acquisitions.
    seconds, hold = float(args[0]), float(args[1])
    polling = cmd == "polling-loop"
    fd = os.open(path, os.O_RDWR | (os.O_NONBLOCK if polling else 0))
    p = select.poll()
    p.register(fd, select.POLLIN)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if polling:
            if not p.poll(200):
                continue
            try:
                b = os.read(fd, 1)
            except BlockingIOError:
                continue
        else:
            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, max(0.01, end - time.monotonic()))
            try:
                b = os.read(fd, 1)
            except Alarm:
                break
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        n += 1
        time.sleep(hold)
        os.write(fd, b)
    say("acquired", n)

elif cmd == "shared-fd-threads":
    # One O_RDWR descriptor shared by two threads (jobserver-rs before 0.1.32: a helper thread
    # reads, the main thread releases). The pool is empty: the helper parks in read(); the
    # main thread's write must not wait behind it (the regular-file position lock).
    fd = os.open(path, os.O_RDWR)
    mine = drain(fd)
    got = []
    t = threading.Thread(target=lambda: got.append(os.read(fd, 1)))
    t.start()
    time.sleep(0.3)  # let the helper park (the test also checks steved's report)
    say("writing", len(mine))
    os.write(fd, mine[0])
    say("write returned")
    t.join()
    say("helper got", got[0])

else:
    sys.exit("unknown command " + cmd)
