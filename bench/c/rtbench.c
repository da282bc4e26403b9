/* rtbench: acquire+release round trips against a jobserver path, from forked clients.
 *
 *   rtbench MODE PATH CLIENTS ITERS WARMUP MAX_SECONDS
 *
 * MODE rt:  read(fd, 1 byte) then write(fd, that byte)          (a blocking client: cargo)
 * MODE prt: poll(POLLIN), then read, then write                 (a polling client: make)
 *
 * Each client is its own process with its own open(PATH, O_RDWR). All clients open first, then
 * start together. Each times every iteration with CLOCK_MONOTONIC and stops after ITERS
 * measured iterations (after WARMUP unmeasured ones) or MAX_SECONDS, whichever comes first.
 * The pool must hold at least CLIENTS tokens, so that nobody ever waits for a token: this
 * measures the transport and the server, not queueing. Prints one JSON object.
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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct slot {
	uint64_t start, end; /* first and last measured iteration */
	long done;           /* measured iterations */
	int error;           /* errno of a failed call, or -1 for a 0-byte read */
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(const uint32_t *v, long n, double p)
{
	if (n == 0)
		return 0;
	long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i] / 1000.0;
}

static int one(int fd, int polling)
{
	char c;
	if (polling) {
		for (;;) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int r = poll(&p, 1, -1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return errno;
			if (p.revents) /* POLLIN, or an error the read below reports */
				break;
		}
	}
	ssize_t r = read(fd, &c, 1);
	if (r == 0)
		return -1;
	if (r < 0)
		return errno;
	if (write(fd, &c, 1) != 1)
		return errno ? errno : -1;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s rt|prt PATH CLIENTS ITERS WARMUP MAX_SECONDS\n", argv[0]);
		return 2;
	}
	int polling = strcmp(argv[1], "prt") == 0;
	const char *path = argv[2];
	long clients = atol(argv[3]), iters = atol(argv[4]), warmup = atol(argv[5]);
	double max_s = atof(argv[6]);
	size_t latbytes = (size_t)clients * (size_t)iters * sizeof(uint32_t);
	uint32_t *lat = mmap(NULL, latbytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct slot *slots = mmap(NULL, clients * sizeof *slots, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (lat == MAP_FAILED || slots == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	int ready[2], go[2];
	if (pipe(ready) || pipe(go)) {
		perror("pipe");
		return 1;
	}
	pid_t *pids = calloc(clients, sizeof *pids);
	for (long k = 0; k < clients; k++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			for (long j = 0; j < k; j++)
				kill(pids[j], SIGKILL);
			return 1;
		}
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
			if (getppid() == 1)
				_exit(1);
			close(ready[0]);
			close(go[1]);
			int fd = open(path, O_RDWR);
			char b = fd < 0 ? 'E' : 'R';
			if (write(ready[1], &b, 1) != 1 || fd < 0)
				_exit(1);
			char x;
			while (read(go[0], &x, 1) < 0 && errno == EINTR)
				;
			struct slot *s = &slots[k];
			uint32_t *mine = lat + (size_t)k * (size_t)iters;
			for (long i = 0; i < warmup; i++) {
				int e = one(fd, polling);
				if (e) {
					s->error = e;
					_exit(1);
				}
			}
			uint64_t deadline = now_ns() + (uint64_t)(max_s * 1e9);
			s->start = now_ns();
			uint64_t t0 = s->start;
			long i;
			for (i = 0; i < iters; i++) {
				int e = one(fd, polling);
				uint64_t t1 = now_ns();
				if (e) {
					s->error = e;
					break;
				}
				uint64_t d = t1 - t0;
				mine[i] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
				t0 = t1;
				if (t1 > deadline) {
					i++;
					break;
				}
			}
			s->done = i;
			s->end = t0;
			_exit(s->error ? 1 : 0);
		}
		pids[k] = pid;
	}
	close(ready[1]);
	close(go[0]);
	long opened = 0, failed_open = 0;
	char b;
	while (opened + failed_open < clients) {
		ssize_t r = read(ready[0], &b, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (b == 'R')
			opened++;
		else
			failed_open++;
	}
	close(go[1]); /* everyone starts */
	int bad = failed_open > 0;
	for (long k = 0; k < clients; k++) {
		int st;
		while (waitpid(pids[k], &st, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad = 1;
	}
	/* Gather: latencies of every client, wall time from the first start to the last end. */
	long total = 0;
	uint64_t first = UINT64_MAX, last = 0;
	int err = 0;
	for (long k = 0; k < clients; k++) {
		struct slot *s = &slots[k];
		if (s->error)
			err = s->error;
		if (s->done == 0)
			continue;
		memmove(lat + total, lat + (size_t)k * (size_t)iters, (size_t)s->done * sizeof(uint32_t));
		total += s->done;
		if (s->start < first)
			first = s->start;
		if (s->end > last)
			last = s->end;
	}
	qsort(lat, total, sizeof(uint32_t), cmp_u32);
	double sum = 0;
	for (long i = 0; i < total; i++)
		sum += lat[i];
	double wall = total ? (double)(last - first) / 1e9 : 0;
	printf("{\"mode\": \"%s\", \"clients\": %ld, \"ops\": %ld, \"ok\": %s, \"error\": %d, "
	       "\"median_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, "
	       "\"mean_us\": %.3f, \"max_us\": %.3f, \"wall_s\": %.4f, \"round_trips_per_s\": %.0f}\n",
	       argv[1], clients, total, bad ? "false" : "true", err, pct(lat, total, 50), pct(lat, total, 90),
	       pct(lat, total, 99), pct(lat, total, 99.9), total ? sum / total / 1000.0 : 0,
	       total ? lat[total - 1] / 1000.0 : 0, wall, wall > 0 ? (double)total / wall : 0);
	return bad ? 1 : 0;
}
