#!/usr/bin/env python3
"""A thread's id reused as a new process's pid, against a jobserver path (issue 14).

Usage: tidreuse.py PATH. The main process opens PATH; a second thread reads one token and
ends (the process keeps the token). Then the thread's id is handed to a new process: we set
/proc/sys/kernel/ns_last_pid to one below it and fork (root only; other processes forking at
the same moment can take the id first, so it retries). That child reads a token and waits.
Prints: "main PID", "thread TID", "child PID" (== TID), "child-got", then waits for a line on
stdin, kills the child, prints "child-gone" and waits for another line before exiting.
"""
import os
import sys
import threading
import time

path = sys.argv[1]
fd = os.open(path, os.O_RDWR)
tid = []


def reader():
    tid.append(threading.get_native_id())
    os.read(fd, 1)


th = threading.Thread(target=reader)
th.start()
th.join()
print("main", os.getpid(), flush=True)
print("thread", tid[0], flush=True)
time.sleep(0.2)  # the thread is gone from /proc/PID/task

child = None
for attempt in range(200):
    r, w = os.pipe()
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(tid[0] - 1))
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if os.getpid() != tid[0]:
            os._exit(3)
        f2 = os.open(path, os.O_RDWR)
        os.read(f2, 1)
        os.write(w, b"g")
        time.sleep(3600)
        os._exit(0)
    os.close(w)
    if pid == tid[0]:
        child = pid
        os.read(r, 1)
        break
    os.waitpid(pid, 0)
    os.close(r)
if child is None:
    sys.exit("could not get the thread's id for a new process (others took it first)")
print("child", child, flush=True)
print("child-got", flush=True)
sys.stdin.readline()
os.kill(child, 9)
os.waitpid(child, 0)
print("child-gone", flush=True)
sys.stdin.readline()
