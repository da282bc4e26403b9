/* handoff: how fast a parked waiter gets a token that comes free by something other than a
 * release: its holder being SIGKILLed (reclaim), or the pool being raised at runtime.
 *
 *   handoff reclaim PATH TRIALS read|poll TIMEOUT_MS
 *       The pool holds exactly 1 token. Per trial: a holder process takes it and sleeps; a waiter
 *       parks (a blocking read, or poll() then a non-blocking read); we take t0 and SIGKILL the
 *       holder; the waiter takes t1 when its read returns a byte. Latency t1 - t0. A token not
 *       back within TIMEOUT_MS is "lost" (a FIFO or a server without accounting never gets it
 *       back): the run stops there, since the pool is then empty.
 *
 *   handoff release PATH TRIALS read|poll
 *       The baseline for reclaim: the same, but the holder gives its token back with write()
 *       (t0 just before the write) instead of being killed.
 *
 *   handoff setjobs PATH TRIALS [COMMAND ARG...]
 *       The pool holds 1 token, taken by a holder for the whole run. Per trial: a waiter parks
 *       in a blocking read; we take t0 and raise the pool to 2, either with steved's
 *       STEVED_IOC_SET ioctl on PATH (no COMMAND) or by running COMMAND (e.g. stevectl
 *       --set-jobs 2); t1 when the waiter's read returns. Then the pool goes back to 1 (ioctl)
 *       and the waiter returns its token.
 *
 * Prints one JSON object with every latency in microseconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* steved's control ioctl (packages/steved/src/control/protocol.ts, docs/control.md):
 * _IOW('j', 2, 16) with {u32 key, u32 flags, f64 value}; key 0 is "jobs". */
struct setting {
	uint32_t key, flags;
	double value;
};
#define STEVED_IOC_SET _IOW('j', 0x02, struct setting)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void put(int fd, const void *b, size_t n)
{
	if (write(fd, b, n) != (ssize_t)n)
		_exit(3);
}

/* Read exactly n bytes from a pipe, with a timeout; 0 ok, -1 timeout or EOF. */
static int get(int fd, void *b, size_t n, int timeout_ms)
{
	size_t got = 0;
	uint64_t until = now_ns() + (uint64_t)timeout_ms * 1000000u;
	while (got < n) {
		int left = (int)((int64_t)(until - now_ns()) / 1000000);
		if (left < 0)
			return -1;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		ssize_t k = read(fd, (char *)b + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

/* Wait until pid sleeps (state S or D in /proc/pid/stat), i.e. it is parked in its read or poll. */
static void wait_parked(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	for (int i = 0; i < 20000; i++) {
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			return;
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n > 0) {
			buf[n] = 0;
			char *p = strrchr(buf, ')');
			if (p && (p[2] == 'S' || p[2] == 'D'))
				break;
		}
		usleep(50);
	}
	usleep(2000); /* and give the server time to have parked the request */
}

/* Take one token: a blocking read, or poll then a non-blocking read (O_NONBLOCK fd). */
static int take(int fd, int polling)
{
	char c;
	for (;;) {
		if (polling) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (poll(&p, 1, -1) < 0) {
				if (errno == EINTR)
					continue;
				return -1;
			}
			if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
				return -1;
		}
		ssize_t r = read(fd, &c, 1);
		if (r == 1)
			return 0;
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		return -1;
	}
}

static pid_t spawn_holder(const char *path, int ready_w)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
		int fd = open(path, O_RDWR);
		if (fd < 0 || take(fd, 0) != 0)
			_exit(1);
		put(ready_w, "H", 1);
		for (;;)
			pause();
	}
	return pid;
}

/* A waiter: parks for a token, reports t1, returns the token when told to (or at once). */
static pid_t spawn_waiter(const char *path, int polling, int ready_w, int result_w, int release_r)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
		int fd = open(path, O_RDWR | (polling ? O_NONBLOCK : 0));
		if (fd < 0)
			_exit(1);
		put(ready_w, "W", 1);
		if (take(fd, polling) != 0)
			_exit(1);
		uint64_t t1 = now_ns();
		put(result_w, &t1, sizeof t1);
		if (release_r >= 0) {
			char x;
			if (read(release_r, &x, 1) < 0)
				_exit(1);
		}
		if (write(fd, "+", 1) != 1)
			_exit(1);
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
}

static void print_lat(const char *name, double *v, int n)
{
	printf("\"%s\": [", name);
	for (int i = 0; i < n; i++)
		printf("%s%.2f", i ? ", " : "", v[i]);
	printf("]");
}

static int set_jobs(int fd, double jobs)
{
	struct setting s = { .key = 0, .flags = 0, .value = jobs };
	return ioctl(fd, STEVED_IOC_SET, &s);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s reclaim PATH TRIALS read|poll TIMEOUT_MS | release PATH TRIALS read|poll | setjobs PATH TRIALS [COMMAND...]\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	const char *path = argv[2];
	int trials = atoi(argv[3]);
	double *lat = calloc(trials, sizeof *lat);
	int ready[2], result[2];
	if (pipe(ready) || pipe(result))
		die("pipe");
	char c;

	if (strcmp(argv[1], "reclaim") == 0) {
		if (argc != 6)
			return 2;
		int polling = strcmp(argv[4], "poll") == 0;
		int timeout_ms = atoi(argv[5]);
		int n = 0, lost = 0;
		for (int t = 0; t < trials; t++) {
			pid_t h = spawn_holder(path, ready[1]);
			if (get(ready[0], &c, 1, 5000) != 0) {
				fprintf(stderr, "handoff: the holder got no token within 5 s\n");
				kill(h, SIGKILL);
				reap(h);
				return 1;
			}
			pid_t w = spawn_waiter(path, polling, ready[1], result[1], -1);
			if (get(ready[0], &c, 1, 5000) != 0)
				die("waiter start");
			wait_parked(w);
			uint64_t t0 = now_ns(), t1;
			kill(h, SIGKILL);
			int r = get(result[0], &t1, sizeof t1, timeout_ms);
			reap(h);
			if (r != 0) {
				lost = 1;
				kill(w, SIGKILL);
				reap(w);
				break;
			}
			reap(w);
			lat[n++] = (double)(t1 - t0) / 1000.0;
		}
		printf("{\"mode\": \"reclaim\", \"waiter\": \"%s\", \"trials\": %d, \"lost\": %s, \"timeout_ms\": %d, ",
		       polling ? "poll" : "read", n + lost, lost ? "true" : "false", timeout_ms);
		print_lat("latency_us", lat, n);
		printf("}\n");
		return 0;
	}

	if (strcmp(argv[1], "release") == 0) {
		if (argc != 5)
			return 2;
		int polling = strcmp(argv[4], "poll") == 0;
		int n = 0;
		for (int t = 0; t < trials; t++) {
			int go[2];
			if (pipe(go))
				die("pipe");
			pid_t h = fork();
			if (h < 0)
				die("fork");
			if (h == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				close(go[1]);
				int fd = open(path, O_RDWR);
				if (fd < 0 || take(fd, 0) != 0)
					_exit(1);
				put(ready[1], "H", 1);
				if (read(go[0], &c, 1) != 1)
					_exit(1);
				uint64_t t0 = now_ns();
				if (write(fd, "+", 1) != 1)
					_exit(1);
				put(result[1], &t0, sizeof t0);
				_exit(0);
			}
			close(go[0]);
			if (get(ready[0], &c, 1, 5000) != 0)
				die("holder");
			pid_t w = spawn_waiter(path, polling, ready[1], result[1], -1);
			if (get(ready[0], &c, 1, 5000) != 0)
				die("waiter start");
			wait_parked(w);
			put(go[1], "g", 1);
			close(go[1]);
			uint64_t a, b;
			if (get(result[0], &a, sizeof a, 5000) != 0 || get(result[0], &b, sizeof b, 5000) != 0)
				die("release handoff");
			reap(h);
			reap(w);
			/* The holder's t0 and the waiter's t1 arrive in either order. */
			lat[n++] = (double)(a > b ? a - b : b - a) / 1000.0;
		}
		printf("{\"mode\": \"release\", \"waiter\": \"%s\", \"trials\": %d, ", polling ? "poll" : "read", n);
		print_lat("latency_us", lat, n);
		printf("}\n");
		return 0;
	}

	if (strcmp(argv[1], "setjobs") == 0) {
		char **cmd = argc > 4 ? argv + 4 : NULL;
		int ctl = open(path, O_RDWR);
		if (ctl < 0)
			die("open");
		if (set_jobs(ctl, 1) != 0)
			die("ioctl STEVED_IOC_SET jobs=1");
		pid_t h = spawn_holder(path, ready[1]);
		if (get(ready[0], &c, 1, 5000) != 0)
			die("holder");
		int n = 0;
		for (int t = 0; t < trials; t++) {
			int rel[2];
			if (pipe(rel))
				die("pipe");
			pid_t w = spawn_waiter(path, 0, ready[1], result[1], rel[0]);
			close(rel[0]);
			if (get(ready[0], &c, 1, 5000) != 0)
				die("waiter start");
			wait_parked(w);
			uint64_t t0 = now_ns(), t1;
			if (cmd) {
				pid_t p = fork();
				if (p == 0) {
					int nul = open("/dev/null", O_WRONLY);
					dup2(nul, 1);
					execvp(cmd[0], cmd);
					_exit(127);
				}
				if (get(result[0], &t1, sizeof t1, 10000) != 0)
					die("the waiter did not run after the command");
				reap(p);
			} else {
				if (set_jobs(ctl, 2) != 0)
					die("ioctl STEVED_IOC_SET jobs=2");
				if (get(result[0], &t1, sizeof t1, 10000) != 0)
					die("the waiter did not run after the ioctl");
			}
			lat[n++] = (double)(t1 - t0) / 1000.0;
			if (set_jobs(ctl, 1) != 0)
				die("ioctl STEVED_IOC_SET jobs=1");
			put(rel[1], "x", 1);
			close(rel[1]);
			reap(w);
		}
		kill(h, SIGKILL);
		reap(h);
		printf("{\"mode\": \"setjobs\", \"via\": \"%s\", \"trials\": %d, ", cmd ? "command" : "ioctl", n);
		print_lat("latency_us", lat, n);
		printf("}\n");
		return 0;
	}
	return 2;
}
