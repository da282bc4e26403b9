#!/bin/sh
# The CUSE suite, run by /init inside the VM as root (busybox sh). It drives the real steved
# (Node + its libfuse3 addon) on a real CUSE device and prints one marker line per test:
#   @@ plan NAME...   @@ ok NAME   @@ not ok NAME: reason   @@ done
# Diagnostics are "## ..." lines. No timing assertions: every wait is bounded only so that a
# broken daemon fails a test instead of hanging the VM.
NAME=steve.test
DEV=/dev/$NAME
JOBS=4
VT=/opt/vm/vmtest
STEVED="/usr/bin/node /opt/steved/packages/steved/bin/steved.js"
READY_S=120      # a Node start under TCG takes a few seconds; this is only a bound
MAKE=/usr/bin/make
CTL="/usr/bin/node /opt/steved/packages/steved/bin/stevectl.js --device $DEV"
JOBCLIENT=/opt/steved/packages/jobclient/bin/jobclient.js

P1="steved-start device-node device-default-mode read-write nonblock-open fcntl-nonblock
 blocking-read-wakeup poll-wakeup epoll-wakeup epoll-et-wakeup select-wakeup poll-reservation
 fifo-order reclaim-killed-holder reclaim-killed-holder-fd-shared eintr eintr-sa-restart
 kill-parked-reader stop-cont-parked-reader thread-read-main-return kill-grant-race unprivileged-client
 default-non-member-denied
 stevectl-get stevectl-status-json holder-killed-after-status stevectl-resize-wakes-reader
 stevectl-set-back jobclient-run jobclient-run-returns gnu-make-parallel gnu-make-tokens-returned steved-survived server-killed"
P2="restart-registers restart-serves second-instance-refused first-instance-unharmed
 sigterm-parked-reader sigterm-clean"
P3="user-start user-dropped user-device-mode user-serves user-reclaim user-group-member-access
 user-non-member-denied user-sigterm-clean"
echo "@@ plan" $P1 $P2 $P3

ok() { echo "@@ ok $1"; }
notok() { echo "@@ not ok $1: $2"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# vt NAME TEST [ARGS]: run a vmtest test, reported as NAME.
# vt_with CMD... -- NAME TEST [ARGS]: the same, started through CMD (vmtest runas, jobclient run).
vt() {
  _n=$1; _t=$2; shift 2
  VMTEST_NAME=$_n $VT "$_t" $DEV $JOBS "$@" >/tmp/vt.out 2>&1 &
  _finish_vt $! "$_n"
}
vt_with() {
  _pre=""
  while [ "$1" != "--" ]; do _pre="$_pre $1"; shift; done
  shift; _n=$1; _t=$2; shift 2
  VMTEST_NAME=$_n $_pre $VT "$_t" $DEV $JOBS "$@" >/tmp/vt.out 2>&1 &
  _finish_vt $! "$_n"
}
# Wait for a vmtest (its own watchdog ends it within 30 s). One that outlives HUNG_S is stuck
# in the kernel: show where, fail it, and go on with the next test.
HUNG_S=45
_finish_vt() {
  _i=0
  while alive $1 && [ $_i -lt $((HUNG_S * 10)) ]; do sleep 0.1; _i=$((_i + 1)); done
  if alive $1; then
    cat /tmp/vt.out
    echo "## $2: still running after ${HUNG_S} s; processes:"
    show_stuck
    notok "$2" "hung for ${HUNG_S} s (see the process states above)"
    kill -KILL $1 2>/dev/null
    return
  fi
  wait $1; _rc=$?
  cat /tmp/vt.out
  grep -q "^@@ " /tmp/vt.out || notok "$2" "vmtest exited with status $_rc and no result"
}
# Every process that is not a kernel thread: pid, state, wchan, command line, kernel stack.
show_stuck() {
  for _d in /proc/[0-9]*; do
    _p=${_d#/proc/}
    [ -s $_d/cmdline ] || continue
    _st=$(cut -d' ' -f3 $_d/stat 2>/dev/null)
    echo "##   pid $_p state $_st wchan $(cat $_d/wchan 2>/dev/null) syscall $(cut -d' ' -f1-2 $_d/syscall 2>/dev/null): $(tr '\0' ' ' <$_d/cmdline | cut -c1-80)"
    case "$_st" in D) sed 's/^/##     /' $_d/stack 2>/dev/null ;; esac
  done
}

# A process is alive while /proc/PID exists and is not a zombie.
alive() { [ -r /proc/$1/stat ] && [ "$(cut -d' ' -f3 /proc/$1/stat 2>/dev/null)" != Z ]; }

SPID=""
SLOG=""
RUN=0
# start_steved TESTNAME [ARGS]: start steved in the background, wait for its MAKEFLAGS line.
start_steved() {
  _n=$1; shift
  RUN=$((RUN + 1))
  SLOG=/tmp/steved.$RUN.log
  echo "## starting: steved --transport cuse --dev-name $NAME -j $JOBS -v $* (at $(uptime_s) s)"
  $STEVED --transport cuse --dev-name $NAME -j $JOBS -v "$@" >$SLOG 2>&1 &
  SPID=$!
  _i=0
  while [ $_i -lt $((READY_S * 10)) ]; do
    if grep -q "MAKEFLAGS=--jobserver-auth=fifo:$DEV\$" $SLOG 2>/dev/null; then
      echo "## steved (pid $SPID) ready at $(uptime_s) s"
      ok "$_n"
      return 0
    fi
    alive $SPID || break
    sleep 0.1
    _i=$((_i + 1))
  done
  if alive $SPID; then
    notok "$_n" "no 'MAKEFLAGS=--jobserver-auth=fifo:$DEV' line within ${READY_S} s: $(tail -n 3 $SLOG | tr '\n' ' ')"
  else
    wait $SPID; _rc=$?
    notok "$_n" "steved exited with status $_rc: $(tail -n 5 $SLOG | tr '\n' ' ')"
  fi
  return 1
}

# stop_steved: SIGTERM, then SIGKILL if it lingers; prints its log. Sets STOP_RC (or "hung").
stop_steved() {
  [ -n "$SPID" ] || return 0
  if alive $SPID; then
    kill -TERM $SPID 2>/dev/null
    _i=0
    while alive $SPID && [ $_i -lt 300 ]; do sleep 0.1; _i=$((_i + 1)); done
  fi
  if alive $SPID; then
    STOP_RC=hung
    kill -KILL $SPID 2>/dev/null
    _i=0
    while alive $SPID && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
  fi
  if alive $SPID; then
    echo "## steved $SPID survives SIGKILL (stuck in D state?)"
  else
    wait $SPID; _rc=$?
    [ "$STOP_RC" = hung ] || STOP_RC=$_rc
  fi
  sed 's/^/## steved log: /' $SLOG
  SPID=""
}

# Is the device gone (bounded wait)?
dev_gone() {
  _i=0
  while [ -e $DEV ] && [ $_i -lt 200 ]; do sleep 0.1; _i=$((_i + 1)); done
  [ ! -e $DEV ]
}

sigterm_test() {
  _n=$1
  STOP_RC=""
  if [ -z "$SPID" ] || ! alive $SPID; then notok "$_n" "steved is not running"; stop_steved; return; fi
  stop_steved
  if [ "$STOP_RC" = hung ]; then notok "$_n" "steved did not exit within 30 s of SIGTERM"
  elif [ "$STOP_RC" != 0 ]; then notok "$_n" "steved exited with status $STOP_RC after SIGTERM, want 0"
  elif ! dev_gone; then notok "$_n" "$DEV still exists after steved exited"
  else ok "$_n"; fi
}

# A second steved for the same device name must refuse to start and leave the first alone.
second_instance_test() {
  _n=second-instance-refused
  _log=/tmp/steved.second.log
  $STEVED --transport cuse --dev-name $NAME -j 2 >$_log 2>&1 &
  _p=$!
  _i=0
  while alive $_p && [ $_i -lt $((READY_S * 10)) ]; do sleep 0.1; _i=$((_i + 1)); done
  sed 's/^/## second steved: /' $_log
  if alive $_p; then
    notok $_n "a second steved for $DEV is still running: $(head -n 2 $_log | tr '\n' ' ')"
    kill -KILL $_p
  else
    wait $_p; _rc=$?
    if [ $_rc = 0 ]; then notok $_n "a second steved for $DEV exited with status 0"
    elif grep -q "MAKEFLAGS=" $_log; then notok $_n "the second steved claimed to serve: $(grep MAKEFLAGS= $_log)"
    else ok $_n; fi
  fi
}

make_test() {
  _n=gnu-make-parallel
  if [ ! -x $MAKE ]; then notok $_n "GNU make 4.4 is not in the image"; return; fi
  rm -f /tmp/jobs.log
  # No -j: make joins the jobserver named in MAKEFLAGS (tokens + its one implicit slot).
  MAKEFLAGS="--jobserver-auth=fifo:$DEV" $MAKE -s -f /opt/vm/jobs.mk LOG=/tmp/jobs.log VT=$VT >/tmp/make.out 2>&1
  _rc=$?
  sed 's/^/## make: /' /tmp/make.out
  set -- $($VT maxconc /tmp/jobs.log 2>/dev/null)
  _max=${1:-0}; _starts=${2:-0}; _ends=${3:-0}
  _limit=$((JOBS + 1))
  echo "## make: exit $_rc, $_starts jobs started, $_ends ended, at most $_max at once (limit $_limit)"
  if [ $_rc != 0 ]; then notok $_n "make exited with status $_rc"
  elif [ "$_starts" != 10 ] || [ "$_ends" != 10 ]; then notok $_n "$_starts of 10 jobs started, $_ends ended"
  elif [ "$_max" -gt $_limit ]; then notok $_n "$_max jobs ran at once with $JOBS tokens + 1 implicit slot"
  elif [ "$_max" -lt 2 ]; then notok $_n "the jobs ran one at a time: make did not use the jobserver"
  elif grep -qi "jobserver" /tmp/make.out; then notok $_n "make complained: $(grep -i jobserver /tmp/make.out | head -n 1)"
  else ok $_n; fi
}

# The control plane (stevectl: ioctls on the CUSE device) and the Node client (jobclient).
ctl_tests() {
  _out=$($CTL --get-jobs --get-tokens 2>&1 | tr '\n' ' ')
  [ "$_out" = "$JOBS $JOBS " ] && ok stevectl-get || notok stevectl-get "stevectl --get-jobs --get-tokens printed '$_out', want '$JOBS $JOBS'"

  $VT hold $DEV $JOBS >/tmp/hold.out 2>&1 &
  _h=$!
  _i=0
  while ! grep -q held /tmp/hold.out && alive $_h && [ $_i -lt 200 ]; do sleep 0.1; _i=$((_i + 1)); done
  $CTL status --json >/tmp/status.json 2>&1
  _rc=$?
  sed 's/^/## status: /' /tmp/status.json | grep -E '"(transport|path|jobs|free|held|pid)"'
  if ! grep -q held /tmp/hold.out; then notok stevectl-status-json "the holder got no token: $(cat /tmp/hold.out)"
  elif [ $_rc != 0 ]; then notok stevectl-status-json "stevectl status --json exited with $_rc: $(head -c 300 /tmp/status.json)"
  elif ! grep -q '"transport": "cuse"' /tmp/status.json; then notok stevectl-status-json 'no "transport": "cuse"'
  elif ! grep -q "\"path\": \"$DEV\"" /tmp/status.json; then notok stevectl-status-json "no \"path\": \"$DEV\""
  elif ! grep -q '"held": 1,' /tmp/status.json; then notok stevectl-status-json 'no "held": 1 with one holder'
  elif ! grep -Eq "\"pid\": $_h,?\$" /tmp/status.json; then notok stevectl-status-json "the holder (pid $_h) is not listed"
  else ok stevectl-status-json; fi
  kill -KILL $_h 2>/dev/null
  wait $_h 2>/dev/null
  vt holder-killed-after-status pool-full

  vt stevectl-resize-wakes-reader run-while-parked $((JOBS + 1)) $CTL --set-jobs $((JOBS + 1))
  _out=$($CTL --set-jobs $JOBS --get-jobs 2>&1)
  if [ "$_out" = "$JOBS" ]; then
    vt stevectl-set-back pool-full
  else
    notok stevectl-set-back "stevectl --set-jobs $JOBS --get-jobs printed '$_out'"
  fi
}

jobclient_test() {
  if [ ! -f $JOBCLIENT ]; then notok jobclient-run "packages/jobclient is not in the image"; notok jobclient-run-returns "no jobclient"; return; fi
  # jobclient holds 2 tokens while the command runs; the command sees the other 2 and MAKEFLAGS.
  vt_with /usr/bin/node $JOBCLIENT run -n 2 --jobserver $DEV -- jobclient-run expect-free $((JOBS - 2))
  vt jobclient-run-returns pool-full
}

# ---- 1. steved as started by an administrator: the behavioural suite, then a crash ----------
start_steved steved-start
if [ -c $DEV ]; then
  echo "## device: $(ls -l $DEV)"
  ok device-node
else
  notok device-node "$DEV is not a character device: $(ls -l $DEV 2>&1)"
fi
mode=$(stat -c '%a %U:%G' $DEV 2>&1)
echo "## device mode and owner with default options: $mode"
# No --mode: root and the jobserver group (the guest has one, etc-group), as steve does.
[ "$mode" = "660 root:jobserver" ] && ok device-default-mode || notok device-default-mode "$mode, want 660 root:jobserver (steved's default with a jobserver group)"

for t in read-write nonblock-open fcntl-nonblock blocking-read-wakeup poll-wakeup epoll-wakeup \
         epoll-et-wakeup select-wakeup poll-reservation fifo-order reclaim-killed-holder \
         reclaim-killed-holder-fd-shared eintr eintr-sa-restart kill-parked-reader \
         stop-cont-parked-reader thread-read-main-return kill-grant-race; do
  vt $t $t
done
# The default access is the jobserver group's: a member may use the device, others not.
vt_with $VT runasg 1001 1001 "$(grep '^jobserver:' /etc/group | cut -d: -f3)" -- unprivileged-client access-ok
vt_with $VT runas 1002 1002 -- default-non-member-denied access-denied
ctl_tests
jobclient_test
make_test
vt gnu-make-tokens-returned pool-full

if [ -n "$SPID" ] && alive $SPID; then ok steved-survived; else notok steved-survived "steved is gone: $(tail -n 5 $SLOG | tr '\n' ' ')"; fi
if [ -n "$SPID" ]; then
  vt server-killed server-killed $SPID
  if alive $SPID; then sleep 1; fi
  STOP_RC=""
  stop_steved
  echo "## the killed steved ended with status $STOP_RC"
else
  notok server-killed "steved is not running"
fi

# ---- 2. restarted after the crash: the name is registered again ------------------------------
if start_steved restart-registers; then
  vt restart-serves pool-full
else
  notok restart-serves "steved did not start again"
fi
second_instance_test
vt first-instance-unharmed pool-full
# SIGTERM while a reader is parked: the reader gets an error, steved exits 0, the node goes.
VMTEST_NAME=sigterm-parked-reader $VT park-error $DEV $JOBS >/tmp/pe.out 2>&1 &
PE=$!
_i=0
while ! grep -q parked /tmp/pe.out && alive $PE && [ $_i -lt 300 ]; do sleep 0.1; _i=$((_i + 1)); done
sigterm_test sigterm-clean
_i=0
while alive $PE && [ $_i -lt 700 ]; do sleep 0.1; _i=$((_i + 1)); done
if alive $PE; then
  cat /tmp/pe.out; show_stuck; notok sigterm-parked-reader "the parked reader hangs after steved stopped"; kill -KILL $PE
else
  wait $PE; cat /tmp/pe.out
  grep -q "^@@ " /tmp/pe.out || notok sigterm-parked-reader "vmtest ended without a result"
fi

# ---- 3. dropping privileges, a group-only device --------------------------------------------
JS_GID=$(grep '^jobserver:' /etc/group | cut -d: -f3)
if start_steved user-start --user builder --mode 0660 --group jobserver; then
  u=$(grep '^Uid:' /proc/$SPID/status | tr -s '\t ' ' ')
  g=$(grep '^Gid:' /proc/$SPID/status | tr -s '\t ' ' ')
  echo "## steved runs with $u; $g; groups $(grep '^Groups:' /proc/$SPID/status | cut -f2)"
  [ "$u" = "Uid: 1000 1000 1000 1000" ] && [ "$g" = "Gid: 1000 1000 1000 1000" ] && ok user-dropped ||
    notok user-dropped "steved runs with $u, $g; want builder (1000) everywhere"
else
  notok user-dropped "steved did not start"
fi
mode=$(stat -c '%a %U:%G' $DEV 2>&1)
echo "## device mode and owner with --user builder --mode 0660 --group jobserver: $mode"
[ "$mode" = "660 root:jobserver" ] && ok user-device-mode || notok user-device-mode "$mode, want 660 root:jobserver"
vt user-serves pool-full
vt user-reclaim reclaim-killed-holder
vt_with $VT runasg 1001 1001 $JS_GID -- user-group-member-access access-ok
vt_with $VT runas 1002 1002 -- user-non-member-denied access-denied
sigterm_test user-sigterm-clean

stop_steved
echo "@@ done"
