/*
 * vmtest: the client side of the CUSE VM suite. One static binary, run inside the VM as
 *
 *   vmtest TEST DEVICE JOBS [ARGS...]     run one behavioural test against a token server
 *                                         (reported as $VMTEST_NAME when that is set)
 *   vmtest stamp LOG S|E NAME             append "S|E <monotonic ns> NAME" to LOG (make jobs)
 *   vmtest maxconc LOG                    print the most jobs LOG shows running at once
 *   vmtest runas UID GID CMD [ARGS...]    drop to UID/GID (no supplementary groups) and exec
 *   vmtest runasg UID GID SUPGID CMD ...  the same with one supplementary group
 *
 * A test prints diagnostics as "## TEST: ..." lines and ends with exactly one marker line,
 * "@@ ok TEST" or "@@ not ok TEST: reason", and exits 0 or 1. Every test ends by checking
 * that the pool holds exactly JOBS free tokens again (none lost, none made up).
 *
 * No timing assertions: every wait is bounded by a generous watchdog that only exists so a
 * broken server fails the test instead of hanging the VM. A process is "parked" when it
 * sleeps inside the expected system call (read from /proc/PID/stat and /proc/PID/syscall).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#define WATCHDOG_S 30    /* a whole test; only a hung server reaches it */
#define WAIT_MS 10000    /* one bounded wait inside a test */

static const char *test_name = "?";
static const char *dev;
static int jobs;
static const char *step = "start";
static pid_t kids[16];
static int nkids;

static void diag(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(buf, sizeof buf, "## %s: ", test_name);
  n += vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  (void)!write(1, buf, n);
}

static void kill_kids(void) {
  for (int i = 0; i < nkids; i++)
    if (kids[i] > 0) kill(kids[i], SIGKILL);
}

static void finish(int ok, const char *fmt, ...) {
  char buf[600];
  int n;
  if (ok) {
    n = snprintf(buf, sizeof buf, "@@ ok %s\n", test_name);
  } else {
    va_list ap;
    va_start(ap, fmt);
    n = snprintf(buf, sizeof buf, "@@ not ok %s: ", test_name);
    n += vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
  }
  kill_kids();
  (void)!write(1, buf, n);
  _exit(ok ? 0 : 1);
}

#define FAIL(...) finish(0, __VA_ARGS__)

static void on_watchdog(int sig) {
  (void)sig;
  char buf[300];
  int n = snprintf(buf, sizeof buf, "@@ not ok %s: watchdog (%d s) fired while: %s\n", test_name, WATCHDOG_S, step);
  kill_kids();
  (void)!write(1, buf, n);
  _exit(1);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static int open_dev(int flags) {
  int fd = open(dev, flags | O_CLOEXEC);
  if (fd < 0) FAIL("open(%s, 0x%x): %s", dev, flags, strerror(errno));
  return fd;
}

/* ---- processes -------------------------------------------------------------------------- */

struct kid;
static void close_others(const struct kid *k);

/* Fork a child running fn(k). The child keeps only stdio and the descriptors named in k, so
 * that pipe ends meant for other children never leak into it. */
static pid_t spawn(int (*fn)(void *), struct kid *k) {
  fflush(stdout);
  pid_t p = fork();
  if (p < 0) FAIL("fork: %s", strerror(errno));
  if (p == 0) {
    alarm(0);
    nkids = 0;
    close_others(k);
    _exit(fn(k));
  }
  kids[nkids++] = p;
  return p;
}

static void forget(pid_t p) {
  for (int i = 0; i < nkids; i++)
    if (kids[i] == p) kids[i] = 0;
}

/* Wait for a child with a bound; returns its wait status. */
static int reap(pid_t p, const char *what) {
  long long end = now_ms() + WAIT_MS;
  int st;
  for (;;) {
    pid_t r = waitpid(p, &st, WNOHANG);
    if (r == p) break;
    if (r < 0 && errno != EINTR) FAIL("waitpid(%s): %s", what, strerror(errno));
    if (now_ms() > end) FAIL("%s (pid %d) did not finish", what, p);
    msleep(5);
  }
  forget(p);
  return st;
}

static int exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

/* The state letter and the system call number a process sleeps in (-1: running, none). */
static int proc_state(pid_t p, char *state, long *nr) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", p);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *rp = strrchr(buf, ')');
  if (!rp || rp[1] != ' ') return -1;
  *state = rp[2];
  snprintf(path, sizeof path, "/proc/%d/syscall", p);
  f = fopen(path, "r");
  if (!f) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  *nr = (buf[0] >= '0' && buf[0] <= '9') ? strtol(buf, NULL, 10) : -1;
  return 0;
}

/* Wait until process p sleeps inside one of the system calls in nrs (terminated by -1). */
static void wait_parked(pid_t p, const long *nrs, const char *what) {
  long long end = now_ms() + WAIT_MS;
  char st = '?';
  long nr = -1;
  for (;;) {
    if (proc_state(p, &st, &nr) < 0) FAIL("%s (pid %d) is gone before it parked", what, p);
    if (st == 'S' || st == 'D')
      for (const long *x = nrs; *x >= 0; x++)
        if (nr == *x) return;
    if (st == 'Z') FAIL("%s (pid %d) exited instead of parking", what, p);
    if (now_ms() > end) FAIL("%s (pid %d) never parked (state %c, syscall %ld)", what, p, st, nr);
    msleep(5);
  }
}

static int still_parked(pid_t p, const long *nrs) {
  char st;
  long nr;
  if (proc_state(p, &st, &nr) < 0) return 0;
  if (st != 'S' && st != 'D') return 0;
  for (const long *x = nrs; *x >= 0; x++)
    if (nr == *x) return 1;
  return 0;
}

static const long SYS_READS[] = {SYS_read, -1};
static const long SYS_POLLS[] = {SYS_poll, SYS_ppoll, -1};
static const long SYS_EPOLLS[] = {SYS_epoll_wait, SYS_epoll_pwait, -1};
static const long SYS_SELECTS[] = {SYS_select, SYS_pselect6, -1};

/* A pipe a child reports on with one byte (a letter), read by the parent with a bound. */
static int report_byte(int rfd, const char *what) {
  struct pollfd p = {rfd, POLLIN, 0};
  int r;
  do r = poll(&p, 1, WAIT_MS); while (r < 0 && errno == EINTR);
  if (r == 0) FAIL("no word from %s", what);
  char c;
  if (read(rfd, &c, 1) != 1) FAIL("%s went away without a word", what);
  return c;
}

/* ---- the pool --------------------------------------------------------------------------- */

/* Take every free token through a fresh O_NONBLOCK descriptor; returns how many. */
static int drain(int fd) {
  int n = 0;
  char c;
  for (;;) {
    ssize_t r = read(fd, &c, 1);
    if (r == 1) {
      if (c != '+') diag("token byte 0x%02x, not '+'", (unsigned char)c);
      n++;
      if (n > jobs + 8) break;
      continue;
    }
    if (r == 0) FAIL("read returned 0 bytes (EOF) after %d tokens", n);
    if (errno == EAGAIN) break;
    if (errno == EINTR) continue;
    FAIL("non-blocking read after %d tokens: %s", n, strerror(errno));
  }
  return n;
}

static void give_back(int fd, int n) {
  for (int i = 0; i < n; i++) {
    ssize_t r;
    do r = write(fd, "+", 1); while (r < 0 && errno == EINTR);
    if (r != 1) FAIL("writing token %d of %d back: %s", i + 1, n, r < 0 ? strerror(errno) : "short write");
  }
}

/* Take all JOBS tokens: what is free now, then wait (poll) for the rest. */
static int take_all(int fd, const char *why) {
  int n = drain(fd);
  long long end = now_ms() + WAIT_MS;
  while (n < jobs) {
    struct pollfd p = {fd, POLLIN, 0};
    int left = (int)(end - now_ms());
    if (left <= 0) FAIL("%s: only %d of %d tokens came back", why, n, jobs);
    int r = poll(&p, 1, left);
    if (r < 0 && errno != EINTR) FAIL("poll: %s", strerror(errno));
    if (r > 0 && !(p.revents & POLLIN)) FAIL("poll answered revents=0x%x", p.revents);
    n += drain(fd);
  }
  if (n > jobs) FAIL("%s: the pool handed out %d tokens, it has %d", why, n, jobs);
  return n;
}

/* The end of every test: exactly JOBS tokens are free again. */
static void check_full(void) {
  step = "checking that every token came back";
  int fd = open_dev(O_RDWR | O_NONBLOCK);
  int n = take_all(fd, "after the test");
  give_back(fd, n);
  close(fd);
}

/* The parent takes every token so the pool is empty; returns the descriptor holding them. */
static int empty_pool(void) {
  step = "emptying the pool";
  int fd = open_dev(O_RDWR | O_NONBLOCK);
  int n = take_all(fd, "emptying the pool");
  (void)n;
  char c;
  if (read(fd, &c, 1) != -1 || errno != EAGAIN) FAIL("an empty pool did not answer EAGAIN to O_NONBLOCK");
  return fd;
}

/* ---- child bodies ----------------------------------------------------------------------- */

/* exit codes of children */
enum { C_OK = 0, C_EOF = 10, C_ERR = 11, C_NOTREADY = 12, C_EAGAIN = 13, C_BADWRITE = 14, C_NOTEINTR = 15, C_TOKEN = 16, C_EINTR_NOSIG = 17 };

struct kid {
  int report;    /* write end of a pipe to the parent, or -1 */
  int hold;      /* read end: the parent closes its end to let the child go on; -1: don't wait */
  int fd;        /* an inherited descriptor to use, or -1 */
  int how;       /* waiting method for pollers, or sigaction flags */
  char id;       /* what the child reports when it has its token ('T' when 0) */
};

static void close_others(const struct kid *k) {
  for (int fd = 3; fd < 1024; fd++)
    if (!k || (fd != k->report && fd != k->hold && fd != k->fd)) close(fd);
}

/* The child has its token: tell the parent who it is. */
static void say(struct kid *k, char c) {
  if (k->id) c = k->id;
  if (k->report >= 0) (void)!write(k->report, &c, 1);
}
static void hold(struct kid *k) {
  if (k->hold >= 0) {
    char c;
    while (read(k->hold, &c, 1) < 0 && errno == EINTR) {}
  }
}

/* Blocking read of one token; report 'T'; wait for leave; give it back. */
static int blocking_reader(void *arg) {
  struct kid *k = arg;
  int fd = k->fd >= 0 ? k->fd : open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) return C_ERR;
  char c;
  ssize_t r = read(fd, &c, 1);
  if (r == 0) return C_EOF;
  if (r < 0) {
    fprintf(stderr, "## reader %d: read: %s\n", getpid(), strerror(errno));
    return C_ERR;
  }
  say(k, 'T');
  hold(k);
  if (write(fd, &c, 1) != 1) return C_BADWRITE;
  return C_OK;
}

enum { W_POLL, W_EPOLL, W_EPOLLET, W_SELECT };
static const char *how_name[] = {"poll", "epoll", "epoll EPOLLET", "select"};

/* Open O_NONBLOCK, see EAGAIN, wait with k->how, then the read must succeed (reservation). */
static int waiter(void *arg) {
  struct kid *k = arg;
  int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return C_ERR;
  char c;
  if (read(fd, &c, 1) != -1 || errno != EAGAIN) return C_TOKEN;
  int ready = 0;
  if (k->how == W_POLL) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, -1);
    ready = r == 1 && (p.revents & POLLIN);
    if (!ready) fprintf(stderr, "## waiter: poll=%d revents=0x%x\n", r, p.revents);
  } else if (k->how == W_EPOLL || k->how == W_EPOLLET) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | (k->how == W_EPOLLET ? EPOLLET : 0), .data.fd = fd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) return C_ERR;
    struct epoll_event out;
    int r = epoll_wait(ep, &out, 1, -1);
    ready = r == 1 && (out.events & EPOLLIN);
    if (!ready) fprintf(stderr, "## waiter: epoll_wait=%d events=0x%x\n", r, out.events);
  } else {
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(fd, &rs);
    int r = select(fd + 1, &rs, NULL, NULL, NULL);
    ready = r == 1 && FD_ISSET(fd, &rs);
  }
  if (!ready) return C_NOTREADY;
  ssize_t r = read(fd, &c, 1);
  if (r == 0) return C_EOF;
  if (r < 0) return errno == EAGAIN ? C_EAGAIN : C_ERR;
  say(k, 'T');
  hold(k);
  if (write(fd, &c, 1) != 1) return C_BADWRITE;
  return C_OK;
}

static const char *kid_error(int code) {
  switch (code) {
  case C_OK: return "ok";
  case C_EOF: return "read returned 0 bytes (EOF)";
  case C_ERR: return "open or read failed";
  case C_NOTREADY: return "the wait returned without POLLIN";
  case C_EAGAIN: return "told readable, but the read got EAGAIN (no reservation)";
  case C_BADWRITE: return "writing the token back failed";
  case C_NOTEINTR: return "the interrupted read did not fail with EINTR";
  case C_TOKEN: return "it got a token from a pool that should be empty";
  case C_EINTR_NOSIG: return "the read failed with EINTR";
  case 128 + SIGKILL: return "killed";
  default: return "unexpected exit";
  }
}

static void expect_ok(pid_t p, const char *what) {
  int code = exit_code(reap(p, what));
  if (code != C_OK) FAIL("%s: %s (status %d)", what, kid_error(code), code);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* One byte per read, even for a larger buffer; poll(0) readiness; write back. */
static void t_read_write(void) {
  step = "reading one token";
  int fd = open_dev(O_RDWR);
  char buf[16];
  memset(buf, 0, sizeof buf);
  ssize_t r = read(fd, buf, sizeof buf);
  if (r != 1) FAIL("read(16) returned %zd (%s), want exactly 1 byte", r, r < 0 ? strerror(errno) : "");
  if (buf[0] != '+') FAIL("token byte is 0x%02x, want '+'", (unsigned char)buf[0]);
  step = "poll(0) with tokens left";
  struct pollfd p = {fd, POLLIN | POLLOUT, 0};
  int pr = poll(&p, 1, 0);
  if (jobs > 1 && (pr != 1 || (p.revents & (POLLIN | POLLOUT)) != (POLLIN | POLLOUT)))
    FAIL("poll(0) with %d free tokens: %d revents=0x%x, want POLLIN|POLLOUT", jobs - 1, pr, p.revents);
  step = "writing it back";
  r = write(fd, buf, 1);
  if (r != 1) FAIL("write returned %zd (%s)", r, r < 0 ? strerror(errno) : "");
  close(fd);
  check_full();
}

/* O_NONBLOCK at open: JOBS tokens, then EAGAIN; poll(0) on an empty pool has no POLLIN. */
static void t_nonblock_open(void) {
  int fd = open_dev(O_RDWR | O_NONBLOCK);
  step = "draining";
  int n = drain(fd);
  if (n != jobs) FAIL("drained %d tokens before EAGAIN, want %d", n, jobs);
  struct pollfd p = {fd, POLLIN | POLLOUT, 0};
  int pr = poll(&p, 1, 0);
  if (pr < 0 || (p.revents & POLLIN)) FAIL("poll(0) on an empty pool: %d revents=0x%x, want no POLLIN", pr, p.revents);
  if (!(p.revents & POLLOUT)) FAIL("poll(0) on an empty pool: revents=0x%x, want POLLOUT", p.revents);
  give_back(fd, n);
  close(fd);
  check_full();
}

/* O_NONBLOCK set with fcntl after a blocking open is honoured per read, and cleared again. */
static void t_fcntl_nonblock(void) {
  int fd = open_dev(O_RDWR);
  char c;
  step = "blocking reads of every token";
  for (int i = 0; i < jobs; i++)
    if (read(fd, &c, 1) != 1) FAIL("blocking read %d of %d: %s", i + 1, jobs, strerror(errno));
  step = "fcntl(O_NONBLOCK)";
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  ssize_t r = read(fd, &c, 1);
  if (r != -1 || errno != EAGAIN) FAIL("after fcntl(O_NONBLOCK) on an empty pool: read=%zd (%s), want EAGAIN", r, r < 0 ? strerror(errno) : "");
  step = "clearing O_NONBLOCK";
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  /* Now a read must park: prove it with a thread-free child on the same descriptor. */
  int rep[2];
  if (pipe(rep) < 0) FAIL("pipe");
  struct kid k = {rep[1], -1, fd, 0, 0};
  pid_t kp = spawn(blocking_reader, &k);
  wait_parked(kp, SYS_READS, "a reader on the cleared descriptor");
  step = "returning one token";
  give_back(fd, 1);
  if (report_byte(rep[0], "the reader") != 'T') FAIL("the reader did not get the token");
  expect_ok(kp, "the reader");
  give_back(fd, jobs - 1);
  close(fd);
  check_full();
}

/* A reader parked on an empty pool is woken by a token another process returns. */
static void t_blocking_wakeup(void) {
  int fd = empty_pool();
  int rep[2];
  if (pipe(rep) < 0) FAIL("pipe");
  struct kid k = {rep[1], -1, -1, 0, 0};
  pid_t kp = spawn(blocking_reader, &k);
  wait_parked(kp, SYS_READS, "the blocking reader");
  step = "returning one token";
  give_back(fd, 1);
  if (report_byte(rep[0], "the reader") != 'T') FAIL("the reader did not get the token");
  expect_ok(kp, "the reader");
  give_back(fd, jobs - 1);
  close(fd);
  check_full();
}

static void wakeup_test(int how) {
  int fd = empty_pool();
  int rep[2];
  if (pipe(rep) < 0) FAIL("pipe");
  struct kid k = {rep[1], -1, -1, how, 0};
  pid_t kp = spawn(waiter, &k);
  const long *nrs = how == W_POLL ? SYS_POLLS : how == W_SELECT ? SYS_SELECTS : SYS_EPOLLS;
  wait_parked(kp, nrs, how_name[how]);
  step = "returning one token";
  give_back(fd, 1);
  if (report_byte(rep[0], how_name[how]) != 'T') FAIL("%s: no token after the wakeup", how_name[how]);
  expect_ok(kp, how_name[how]);
  give_back(fd, jobs - 1);
  close(fd);
  check_full();
}

/*
 * Reservation: a poller parks first, a blocking reader parks after it. One token comes back:
 * the poller is told POLLIN and its O_NONBLOCK read must get the token, while the reader stays
 * parked; when the poller gives the token back, the reader gets it.
 */
static void t_reservation(void) {
  int fd = empty_pool();
  int repA[2], repB[2], holdA[2];
  if (pipe(repA) < 0 || pipe(repB) < 0 || pipe(holdA) < 0) FAIL("pipe");
  struct kid a = {repA[1], holdA[0], -1, W_POLL, 'A'};
  pid_t pa = spawn(waiter, &a);
  close(holdA[0]);
  close(repA[1]);
  wait_parked(pa, SYS_POLLS, "the poller");
  struct kid b = {repB[1], -1, -1, 0, 'B'};
  pid_t pb = spawn(blocking_reader, &b);
  close(repB[1]);
  wait_parked(pb, SYS_READS, "the blocking reader");
  step = "returning one token";
  give_back(fd, 1);
  struct pollfd p = {repA[0], POLLIN, 0};
  int r;
  do r = poll(&p, 1, WAIT_MS); while (r < 0 && errno == EINTR);
  if (r == 0) {
    int st;
    if (waitpid(pb, &st, WNOHANG) == pb || !still_parked(pb, SYS_READS))
      FAIL("the token went to the blocking reader that parked after the poller; the poller got nothing");
    FAIL("the poller got no token");
  }
  char c = 0;
  if (read(repA[0], &c, 1) != 1 || c != 'A') {
    int code = exit_code(reap(pa, "the poller"));
    FAIL("the poller: %s", kid_error(code));
  }
  step = "checking the reader is still parked";
  if (!still_parked(pb, SYS_READS)) FAIL("the blocking reader is no longer parked while the poller holds the only token");
  step = "letting the poller give its token back";
  close(holdA[1]);
  expect_ok(pa, "the poller");
  if (report_byte(repB[0], "the blocking reader") != 'B') FAIL("the reader did not get the token the poller gave back");
  expect_ok(pb, "the blocking reader");
  give_back(fd, jobs - 1);
  close(fd);
  check_full();
}

/* Parked readers are served in the order they parked. */
static void t_fifo_order(void) {
  int fd = empty_pool();
  int rep[2], h1[2], h2[2];
  if (pipe(rep) < 0 || pipe(h1) < 0 || pipe(h2) < 0) FAIL("pipe");
  struct kid k1 = {rep[1], h1[0], -1, 0, '1'}, k2 = {rep[1], h2[0], -1, 0, '2'};
  pid_t p1 = spawn(blocking_reader, &k1);
  wait_parked(p1, SYS_READS, "reader 1");
  pid_t p2 = spawn(blocking_reader, &k2);
  wait_parked(p2, SYS_READS, "reader 2");
  close(h1[0]);
  close(h2[0]);
  close(rep[1]);
  step = "returning one token";
  give_back(fd, 1);
  int first = report_byte(rep[0], "the readers");
  if (first == '2') FAIL("the token went to reader 2, which parked after reader 1");
  if (first != '1') FAIL("unexpected report '%c'", first);
  if (!still_parked(p2, SYS_READS)) FAIL("reader 2 is not parked any more while reader 1 holds the only token");
  step = "reader 1 gives the token back";
  close(h1[1]);
  expect_ok(p1, "reader 1");
  if (report_byte(rep[0], "reader 2") != '2') FAIL("reader 2 did not get the token reader 1 gave back");
  close(h2[1]);
  expect_ok(p2, "reader 2");
  give_back(fd, jobs - 1);
  close(fd);
  check_full();
}

/* Holder: read one token (on k->fd or its own descriptor), report 'T', then sleep forever. */
static int holder(void *arg) {
  struct kid *k = arg;
  int fd = k->fd >= 0 ? k->fd : open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) return C_ERR;
  char c;
  if (read(fd, &c, 1) != 1) return C_ERR;
  say(k, 'T');
  for (;;) pause();
}

/*
 * A process holding a token is SIGKILLed; a parked reader then gets that token.
 * shared=0: the holder's own descriptor closes with it (RELEASE).
 * shared=1: the descriptor stays open in the parent (no RELEASE): only the pidfd can tell.
 */
static void reclaim_test(int shared) {
  int rep[2], repR[2];
  if (pipe(rep) < 0 || pipe(repR) < 0) FAIL("pipe");
  int sfd = shared ? open_dev(O_RDWR) : -1;
  struct kid h = {rep[1], -1, sfd, 0, 0};
  step = "starting the holder";
  pid_t ph = spawn(holder, &h);
  if (report_byte(rep[0], "the holder") != 'T') FAIL("the holder got no token");
  step = "emptying the pool";
  int fd = open_dev(O_RDWR | O_NONBLOCK);
  int n = drain(fd);
  if (n != jobs - 1) FAIL("%d tokens free while the holder has one, want %d", n, jobs - 1);
  struct kid r = {repR[1], -1, -1, 0, 0};
  pid_t pr = spawn(blocking_reader, &r);
  wait_parked(pr, SYS_READS, "the waiting reader");
  step = "killing the holder";
  kill(ph, SIGKILL);
  int code = exit_code(reap(ph, "the killed holder"));
  if (code != 128 + SIGKILL) FAIL("the holder ended with status %d before it was killed", code);
  step = "waiting for the reclaimed token";
  if (report_byte(repR[0], "the waiting reader (the killed holder's token was not reclaimed)") != 'T')
    FAIL("the waiting reader got nothing");
  expect_ok(pr, "the waiting reader");
  give_back(fd, n);
  close(fd);
  if (sfd >= 0) close(sfd);
  check_full();
}

static volatile sig_atomic_t got_sig;
static void on_sig(int s) { got_sig = s; }

/* A parked reader with a handler: the signal must end its read with EINTR. */
static int eintr_reader(void *arg) {
  struct kid *k = arg;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sig;
  sa.sa_flags = k->how; /* 0 or SA_RESTART */
  sigaction(SIGUSR1, &sa, NULL);
  int fd = open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) return C_ERR;
  char c;
  ssize_t r = read(fd, &c, 1);
  if (r == 1) return C_TOKEN;
  if (r == 0) return C_EOF;
  if (errno != EINTR) {
    fprintf(stderr, "## eintr reader: read failed with %s\n", strerror(errno));
    return C_NOTEINTR;
  }
  return got_sig == SIGUSR1 ? C_OK : C_EINTR_NOSIG;
}

static void eintr_test(int flags) {
  int fd = empty_pool();
  struct kid k = {-1, -1, -1, flags, 0};
  pid_t kp = spawn(eintr_reader, &k);
  wait_parked(kp, SYS_READS, "the reader");
  step = "signalling the parked reader";
  kill(kp, SIGUSR1);
  expect_ok(kp, "the interrupted reader");
  give_back(fd, jobs);
  close(fd);
  check_full();
}

/* A parked reader is SIGKILLed: it must go away (not hang in D) and swallow no token. */
static void t_kill_parked(void) {
  int fd = empty_pool();
  struct kid k = {-1, -1, -1, 0, 0};
  pid_t kp = spawn(blocking_reader, &k);
  wait_parked(kp, SYS_READS, "the reader");
  step = "SIGKILL to the parked reader";
  kill(kp, SIGKILL);
  int code = exit_code(reap(kp, "the killed parked reader"));
  if (code != 128 + SIGKILL) FAIL("the parked reader ended with %s", kid_error(code));
  give_back(fd, jobs);
  close(fd);
  check_full();
}

/* SIGSTOP + SIGCONT on a parked reader without handlers: the kernel sends FUSE_INTERRUPT for
 * the stop, and the server must answer it (EINTR, which clients retry), or the reader sits in
 * D state and never stops. No token is lost. */
static void t_stop_cont(void) {
  int fd = empty_pool();
  struct kid k = {-1, -1, -1, 0, 0};
  pid_t kp = spawn(eintr_reader, &k); /* no SIGUSR1 will come: got_sig stays 0 */
  wait_parked(kp, SYS_READS, "the reader");
  step = "SIGSTOP";
  kill(kp, SIGSTOP);
  long long end = now_ms() + WAIT_MS;
  char st = '?';
  long nr;
  while (proc_state(kp, &st, &nr) == 0 && st != 'T' && now_ms() < end) msleep(5);
  if (st != 'T') FAIL("the reader did not stop (state %c): is it stuck in D?", st);
  kill(kp, SIGCONT);
  step = "after SIGCONT";
  int code = exit_code(reap(kp, "the continued reader"));
  if (code != C_EINTR_NOSIG) FAIL("the continued reader: %s, want EINTR", kid_error(code));
  give_back(fd, jobs);
  close(fd);
  check_full();
}

/* Tokens read by a thread belong to the process: the main thread may give them back. */
static void *thread_reads(void *arg) {
  int fd = *(int *)arg;
  char c;
  static long got;
  got = 0;
  for (int i = 0; i < 2; i++)
    if (read(fd, &c, 1) == 1) got++;
  return &got;
}

static void t_thread(void) {
  if (jobs < 2) FAIL("needs at least 2 tokens");
  int fd = open_dev(O_RDWR);
  pthread_t t;
  void *res;
  step = "a thread reads two tokens";
  if (pthread_create(&t, NULL, thread_reads, &fd) != 0) FAIL("pthread_create");
  pthread_join(t, &res);
  if (*(long *)res != 2) FAIL("the thread read %ld tokens, want 2", *(long *)res);
  step = "the main thread gives both back";
  for (int i = 0; i < 2; i++) {
    ssize_t r = write(fd, "+", 1);
    if (r != 1) FAIL("main thread returning token %d read by its thread: %s (TID not mapped to the process?)", i + 1, r < 0 ? strerror(errno) : "short");
  }
  close(fd);
  check_full();
}

/* The server dies (SIGKILL): a parked reader gets an error, never a token or EOF, and the
 * device node disappears. argv: the server's pid. */
static int crash_reader(void *arg) {
  (void)arg;
  int fd = open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) return C_ERR;
  char c;
  ssize_t r = read(fd, &c, 1);
  if (r == 1) return C_TOKEN;
  if (r == 0) return C_EOF;
  printf("## %s: the parked read failed with %s (errno %d)\n", test_name, strerror(errno), errno);
  fflush(stdout);
  return C_OK;
}

static void t_server_killed(pid_t server) {
  if (server <= 1) FAIL("no server pid given");
  int fd = empty_pool();
  pid_t kp = spawn(crash_reader, NULL);
  wait_parked(kp, SYS_READS, "the reader");
  step = "SIGKILL to the server";
  if (kill(server, SIGKILL) < 0) FAIL("kill(%d): %s", server, strerror(errno));
  int code = exit_code(reap(kp, "the parked reader"));
  if (code != C_OK) FAIL("the parked reader, after the server was killed: %s", kid_error(code));
  step = "waiting for the device node to go";
  long long end = now_ms() + WAIT_MS;
  struct stat sb;
  while (stat(dev, &sb) == 0 && now_ms() < end) msleep(10);
  if (stat(dev, &sb) == 0) FAIL("%s still exists after the server died", dev);
  char c;
  ssize_t r = write(fd, "+", 1);
  diag("writing on a descriptor of the dead device: %zd (%s)", r, r < 0 ? strerror(errno) : "");
  if (r == 1) FAIL("a write to the dead device succeeded");
  r = read(fd, &c, 1);
  if (r >= 0) FAIL("a read from the dead device returned %zd", r);
  close(fd);
  finish(1, NULL);
}

/* Park a reader, say so, and wait (up to a minute) for the server to go away: the reader must
 * get an error, never a token and never 0 bytes (EOF breaks make, Portage, cargo). */
static void t_park_error(void) {
  int fd = empty_pool();
  pid_t kp = spawn(crash_reader, NULL);
  wait_parked(kp, SYS_READS, "the reader");
  printf("## %s: parked (pid %d)\n", test_name, kp);
  step = "waiting for the server to stop";
  alarm(0);
  long long end = now_ms() + 60000;
  int st;
  pid_t r;
  while ((r = waitpid(kp, &st, WNOHANG)) == 0 && now_ms() < end) msleep(10);
  if (r != kp) FAIL("the parked reader was still parked a minute later");
  forget(kp);
  int code = exit_code(st);
  if (code != C_OK) FAIL("the parked reader, when the server stopped: %s", kid_error(code));
  close(fd);
  finish(1, NULL);
}

/* An unprivileged open must succeed (want=0) or be refused with EACCES (want=1). */
static void t_access(int want_denied) {
  int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  diag("uid %d gid %d: open: %s", getuid(), getgid(), fd < 0 ? strerror(errno) : "ok");
  if (want_denied) {
    if (fd >= 0) FAIL("uid %d opened %s, want EACCES", getuid(), dev);
    if (errno != EACCES) FAIL("open as uid %d: %s, want EACCES", getuid(), strerror(errno));
    finish(1, NULL);
  }
  if (fd < 0) FAIL("uid %d cannot open %s: %s", getuid(), dev, strerror(errno));
  char c;
  if (read(fd, &c, 1) != 1) FAIL("uid %d: read: %s", getuid(), strerror(errno));
  if (write(fd, &c, 1) != 1) FAIL("uid %d: write: %s", getuid(), strerror(errno));
  close(fd);
  check_full();
}

/* A reader is parked when a token is granted and it is SIGKILLed in the same instant (both
 * orders, several rounds): the token must come back, whoever the kernel let win. */
static void t_kill_grant_race(void) {
  int fd = empty_pool();
  for (int round = 0; round < 8; round++) {
    struct kid k = {-1, -1, -1, 0, 0};
    pid_t kp = spawn(blocking_reader, &k);
    wait_parked(kp, SYS_READS, "the reader");
    step = "granting and killing at once";
    if (round % 2 == 0) {
      kill(kp, SIGKILL);
      give_back(fd, 1);
    } else {
      give_back(fd, 1);
      kill(kp, SIGKILL);
    }
    reap(kp, "the killed reader");
    step = "waiting for the token to come back";
    long long end = now_ms() + WAIT_MS;
    int got = 0;
    while (!got) {
      struct pollfd p = {fd, POLLIN, 0};
      int left = (int)(end - now_ms());
      if (left <= 0) FAIL("round %d (%s first): the token was lost", round + 1, round % 2 == 0 ? "kill" : "grant");
      if (poll(&p, 1, left) > 0) got = drain(fd);
      if (got > 1) FAIL("round %d: %d tokens came back, want 1", round + 1, got);
    }
  }
  give_back(fd, jobs);
  close(fd);
  check_full();
}

/* Exactly N tokens are free (for a client that holds the rest); MAKEFLAGS names the device. */
static void t_expect_free(int want) {
  const char *mf = getenv("MAKEFLAGS");
  char needle[300];
  snprintf(needle, sizeof needle, "--jobserver-auth=fifo:%s", dev);
  diag("MAKEFLAGS=%s", mf ? mf : "(unset)");
  if (!mf || !strstr(mf, needle)) FAIL("MAKEFLAGS does not contain %s", needle);
  int fd = open_dev(O_RDWR | O_NONBLOCK);
  int n = drain(fd);
  give_back(fd, n);
  close(fd);
  if (n != want) FAIL("%d tokens free, want %d", n, want);
  finish(1, NULL);
}

/* Hold one token until killed; say "held" on stdout once it is held. */
static void t_hold(void) {
  int fd = open_dev(O_RDWR);
  char c;
  if (read(fd, &c, 1) != 1) FAIL("read: %s", strerror(errno));
  printf("held\n");
  for (;;) pause();
}

/* Empty the pool, park a reader, run CMD (which grows the pool), and the reader must get a
 * token; then the pool must hold NEWJOBS tokens. argv: NEWJOBS CMD [ARGS...] */
static void t_run_while_parked(int newjobs, char **cmd) {
  int fd = empty_pool();
  int rep[2];
  if (pipe(rep) < 0) FAIL("pipe");
  struct kid k = {rep[1], -1, -1, 0, 0};
  pid_t kp = spawn(blocking_reader, &k);
  close(rep[1]);
  wait_parked(kp, SYS_READS, "the reader");
  step = "running the command";
  fflush(stdout);
  pid_t c = fork();
  if (c == 0) {
    close_others(NULL);
    execv(cmd[0], cmd);
    _exit(127);
  }
  kids[nkids++] = c;
  int code = exit_code(reap(c, cmd[0]));
  if (code != 0) FAIL("%s exited with status %d", cmd[0], code);
  if (report_byte(rep[0], "the parked reader") != 'T') FAIL("the parked reader got no token after the pool grew");
  expect_ok(kp, "the reader");
  give_back(fd, jobs);
  close(fd);
  jobs = newjobs;
  check_full();
}

/* ---- helpers for the shell ---------------------------------------------------------------- */

static int cmd_stamp(int argc, char **argv) {
  if (argc != 5) return 2;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char buf[256];
  int n = snprintf(buf, sizeof buf, "%s %lld %s\n", argv[3], ts.tv_sec * 1000000000LL + ts.tv_nsec, argv[4]);
  int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, buf, n) != n) return 1;
  return 0;
}

struct ev { long long t; int d; };
static int ev_cmp(const void *a, const void *b) {
  const struct ev *x = a, *y = b;
  if (x->t != y->t) return x->t < y->t ? -1 : 1;
  return x->d - y->d; /* an end before a start at the same instant */
}

static int cmd_maxconc(int argc, char **argv) {
  if (argc != 3) return 2;
  FILE *f = fopen(argv[2], "r");
  if (!f) { perror(argv[2]); return 1; }
  static struct ev evs[4096];
  int n = 0, starts = 0, ends = 0;
  char kind[4], name[200];
  long long t;
  while (n < 4096 && fscanf(f, "%3s %lld %199s", kind, &t, name) == 3) {
    evs[n].t = t;
    evs[n].d = kind[0] == 'S' ? 1 : -1;
    if (kind[0] == 'S') starts++; else ends++;
    n++;
  }
  fclose(f);
  qsort(evs, n, sizeof evs[0], ev_cmp);
  int cur = 0, max = 0;
  for (int i = 0; i < n; i++) {
    cur += evs[i].d;
    if (cur > max) max = cur;
  }
  printf("%d %d %d\n", max, starts, ends);
  return 0;
}

static int cmd_runas(int argc, char **argv, int with_group) {
  int base = with_group ? 5 : 4;
  if (argc <= base) return 2;
  gid_t g = (gid_t)atoi(argv[3]);
  gid_t sup = with_group ? (gid_t)atoi(argv[4]) : 0;
  if (setgroups(with_group ? 1 : 0, &sup) < 0 || setgid(g) < 0 || setuid((uid_t)atoi(argv[2])) < 0) {
    perror("runas");
    return 1;
  }
  execv(argv[base], argv + base);
  perror(argv[base]);
  return 127;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc >= 2 && !strcmp(argv[1], "stamp")) return cmd_stamp(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "maxconc")) return cmd_maxconc(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "runas")) return cmd_runas(argc, argv, 0);
  if (argc >= 2 && !strcmp(argv[1], "runasg")) return cmd_runas(argc, argv, 1);
  if (argc < 4) {
    fprintf(stderr, "usage: vmtest TEST DEVICE JOBS [ARG]\n");
    return 2;
  }
  test_name = getenv("VMTEST_NAME") && *getenv("VMTEST_NAME") ? getenv("VMTEST_NAME") : argv[1];
  dev = argv[2];
  jobs = atoi(argv[3]);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_watchdog);
  alarm(WATCHDOG_S);
  const char *t = argv[1];
  if (!strcmp(t, "read-write")) t_read_write();
  else if (!strcmp(t, "nonblock-open")) t_nonblock_open();
  else if (!strcmp(t, "fcntl-nonblock")) t_fcntl_nonblock();
  else if (!strcmp(t, "blocking-read-wakeup")) t_blocking_wakeup();
  else if (!strcmp(t, "poll-wakeup")) wakeup_test(W_POLL);
  else if (!strcmp(t, "epoll-wakeup")) wakeup_test(W_EPOLL);
  else if (!strcmp(t, "epoll-et-wakeup")) wakeup_test(W_EPOLLET);
  else if (!strcmp(t, "select-wakeup")) wakeup_test(W_SELECT);
  else if (!strcmp(t, "poll-reservation")) t_reservation();
  else if (!strcmp(t, "fifo-order")) t_fifo_order();
  else if (!strcmp(t, "reclaim-killed-holder")) reclaim_test(0);
  else if (!strcmp(t, "reclaim-killed-holder-fd-shared")) reclaim_test(1);
  else if (!strcmp(t, "eintr")) eintr_test(0);
  else if (!strcmp(t, "eintr-sa-restart")) eintr_test(SA_RESTART);
  else if (!strcmp(t, "kill-parked-reader")) t_kill_parked();
  else if (!strcmp(t, "stop-cont-parked-reader")) t_stop_cont();
  else if (!strcmp(t, "thread-read-main-return")) t_thread();
  else if (!strcmp(t, "server-killed")) t_server_killed(argc > 4 ? atoi(argv[4]) : 0);
  else if (!strncmp(t, "access-ok", 9)) t_access(0);
  else if (!strncmp(t, "access-denied", 13)) t_access(1);
  else if (!strcmp(t, "pool-full")) check_full();
  else if (!strcmp(t, "kill-grant-race")) t_kill_grant_race();
  else if (!strcmp(t, "expect-free") && argc > 4) t_expect_free(atoi(argv[4]));
  else if (!strcmp(t, "hold")) t_hold();
  else if (!strcmp(t, "park-error")) t_park_error();
  else if (!strcmp(t, "run-while-parked") && argc > 5) t_run_while_parked(atoi(argv[4]), argv + 5);
  else FAIL("unknown test");
  finish(1, NULL);
}
