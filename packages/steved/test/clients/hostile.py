#!/usr/bin/env python3
"""Odd and hostile uses of a jobserver file, one exact syscall pattern per case.

Usage: hostile.py PATH CASE    Prints "pid N" first, then one "name answer" line per probe,
where answer is a value or an errno name. Used by test/hostile.test.ts; docs/protocol.md
lists what each answer means.
"""
import ctypes
import errno
import mmap
import os
import resource
import signal
import struct
import subprocess
import sys
import time

path, case = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
MAP_FAILED = 2**64 - 1


def say(*a):
    print(*a, flush=True)


def probe(name, fn):
    """Run fn; print its value, or the errno name it failed with."""
    try:
        r = fn()
        say(name, "ok" if r is None else r)
    except OSError as e:
        say(name, errno.errorcode.get(e.errno, e.errno))


def ioc(direction, size, nr, typ=ord("j")):
    return (direction << 30) | (size << 16) | (typ << 8) | nr


def raw_ioctl(fd, cmd, arg):
    """ioctl(2) through libc, so any size and any pointer (NULL too) can be passed."""
    r = libc.ioctl(fd, cmd, arg)
    return r if r >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())


say("pid", os.getpid())

if case == "read-sizes":
    fd = os.open(path, os.O_RDWR)
    probe("read0", lambda: len(os.read(fd, 0)))
    probe("read1", lambda: os.read(fd, 1))
    probe("read1MiB", lambda: os.read(fd, 1 << 20))
    probe("write2", lambda: os.write(fd, b"++"))
    iov = [bytearray(0), bytearray(4096)]
    probe("readv-0-4096", lambda: "%d %r" % (os.readv(fd, iov), bytes(iov[1][:2])))
    probe("write1", lambda: os.write(fd, b"+"))
    probe("write0", lambda: os.write(fd, b""))

elif case == "zero-read":
    # Only a zero-size read: steved must never hand out a token for it.
    fd = os.open(path, os.O_RDONLY)
    probe("read0", lambda: len(os.read(fd, 0)))

elif case == "writes":
    fd = os.open(path, os.O_RDWR)
    a, b = os.read(fd, 1), os.read(fd, 1)
    probe("write2-holding2", lambda: os.write(fd, a + b))
    probe("write100-holding0", lambda: os.write(fd, b"+" * 100))
    os.read(fd, 1)
    probe("write2-holding1", lambda: os.write(fd, b"++"))
    probe("write1MiB-holding1", lambda: os.write(fd, b"+" * (1 << 20)))
    probe("write1-holding1", lambda: os.write(fd, b"\x00"))

elif case == "never-read":
    # Bytes written by a process that never read: one early return, then ENOSPC.
    fd = os.open(path, os.O_WRONLY)
    probe("first", lambda: os.write(fd, b"+"))
    probe("second", lambda: os.write(fd, b"+"))
    say("wrote")
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)

elif case == "wrong-direction":
    ro = os.open(path, os.O_RDONLY)
    wo = os.open(path, os.O_WRONLY)
    probe("write-on-O_RDONLY", lambda: os.write(ro, b"+"))
    probe("read-on-O_WRONLY", lambda: os.read(wo, 1))

elif case == "ioctls":
    fd = os.open(path, os.O_RDWR)
    buf = ctypes.create_string_buffer(16384)
    probe("unknown-0x1234", lambda: raw_ioctl(fd, 0x1234, None))
    probe("TCGETS", lambda: raw_ioctl(fd, 0x5401, buf))
    probe("none-dir-j-0x55", lambda: raw_ioctl(fd, ioc(0, 0, 0x55), None))
    probe("GET-with-size-8", lambda: raw_ioctl(fd, ioc(3, 8, 0x01), buf))
    probe("RW-size-16383", lambda: raw_ioctl(fd, ioc(3, 16383, 0x7F), buf))
    key999 = ctypes.create_string_buffer(struct.pack("<IId", 999, 0, 0.0), 16)
    probe("GET-unknown-key", lambda: raw_ioctl(fd, ioc(3, 16, 0x01), key999))
    probe("GET-NULL-pointer", lambda: raw_ioctl(fd, ioc(3, 16, 0x01), None))
    probe("GET-bad-pointer", lambda: raw_ioctl(fd, ioc(3, 16, 0x01), ctypes.c_void_p(8)))
    n = ctypes.c_int(-1)
    r = raw_ioctl(fd, 0x541B, ctypes.byref(n))  # FIONREAD
    say("FIONREAD", r if r != 0 else n.value)
    one = ctypes.c_int(1)
    probe("FIONBIO", lambda: raw_ioctl(fd, 0x5421, ctypes.byref(one)))
    got = []
    try:
        while True:
            got.append(os.read(fd, 1))
    except BlockingIOError:
        say("after-FIONBIO", "drained", len(got), "then EAGAIN")
    for b in got:
        os.write(fd, b)

elif case == "open-flags":
    def open_close(flags):
        def f():
            fd = os.open(path, flags)
            b = os.read(fd, 1) if flags & 3 != os.O_WRONLY else None
            if b is not None:
                os.write(fd, b)
            os.close(fd)
        return f

    probe("O_RDWR|O_TRUNC", open_close(os.O_RDWR | os.O_TRUNC))
    probe("O_RDWR|O_APPEND", open_close(os.O_RDWR | os.O_APPEND))
    probe("O_RDWR|O_CREAT", open_close(os.O_RDWR | os.O_CREAT))
    probe("O_WRONLY|O_CREAT|O_EXCL", open_close(os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    probe("O_RDONLY|O_DIRECTORY", open_close(os.O_RDONLY | os.O_DIRECTORY))
    probe("PATH/x", lambda: os.close(os.open(path + "/x", os.O_RDONLY)))
    probe("size-after", lambda: os.stat(path).st_size)

elif case == "seeks":
    fd = os.open(path, os.O_RDWR)
    probe("lseek-SET", lambda: os.lseek(fd, 0, os.SEEK_SET))
    probe("lseek-END", lambda: os.lseek(fd, 0, os.SEEK_END))
    probe("pread", lambda: os.pread(fd, 1, 0))
    probe("pwrite", lambda: os.pwrite(fd, b"+", 0))

elif case == "mmap":
    fd = os.open(path, os.O_RDONLY)
    p = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    say("mmap-MAP_SHARED", hex(p) if p != MAP_FAILED else errno.errorcode[ctypes.get_errno()])
    p = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
    say("mmap-MAP_PRIVATE", "mapped" if p != MAP_FAILED else errno.errorcode[ctypes.get_errno()])
    # Touch the private page in a child: the file is 0 bytes long, so that is SIGBUS.
    code = "import ctypes,sys; print(ctypes.c_char.from_address(int(sys.argv[1])).value)"
    child = os.fork()
    if child == 0:
        ctypes.c_char.from_address(p).value
        os._exit(0)
    _, status = os.waitpid(child, 0)
    say("touch-private-page", "signal " + signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else "exit %d" % os.WEXITSTATUS(status))

elif case == "file-ops":
    probe("chmod-0600", lambda: os.chmod(path, 0o600))
    probe("mode-after", lambda: oct(os.stat(path).st_mode & 0o7777))
    probe("truncate-5", lambda: os.truncate(path, 5))
    probe("size-after", lambda: os.stat(path).st_size)
    probe("utime", lambda: os.utime(path))
    probe("unlink", lambda: os.unlink(path))
    probe("rename", lambda: os.rename(path, path + ".moved"))
    probe("link", lambda: os.link(path, path + ".link"))
    probe("setxattr", lambda: os.setxattr(path, "user.x", b"1"))
    probe("listdir", lambda: os.listdir(path))
    fd = os.open(path, os.O_RDWR)
    probe("fsync", lambda: os.fsync(fd))
    probe("ftruncate", lambda: os.ftruncate(fd, 0))

elif case == "emfile":
    # Open the jobserver until this process runs out of descriptors, then use one of them.
    limit = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    fds = []
    try:
        while True:
            fds.append(os.open(path, os.O_RDWR))
    except OSError as e:
        say("opened", len(fds), "then", errno.errorcode[e.errno])
    b = os.read(fds[-1], 1)
    os.write(fds[0], b)
    say("token", b)
    say("holding-fds")
    time.sleep(float(sys.argv[4]))
    for fd in fds:
        os.close(fd)
    say("closed", len(fds))

elif case == "open-and-sleep":
    fds = [os.open(path, os.O_RDONLY), os.open(path, os.O_WRONLY), os.open(path, os.O_RDWR | os.O_NONBLOCK)]
    say("opened", len(fds))
    time.sleep(3600)

else:
    sys.exit("unknown case " + case)
