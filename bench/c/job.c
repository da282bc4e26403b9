/* job: one unit of work of the scheduling benchmark, recording when it ran.
 *
 *   job LOG NAME sleep|cpu MS
 *
 * Appends "start NAME NANOS" and "end NAME NANOS" (CLOCK_MONOTONIC, the clock every process of
 * the benchmark uses) to LOG, one write(2) each on an O_APPEND file, around either a sleep of
 * MS milliseconds or MS milliseconds of its own CPU time (a busy loop: its wall time grows
 * when more jobs than cores run).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void record(int fd, const char *what, const char *name)
{
	char line[256];
	int n = snprintf(line, sizeof line, "%s %s %llu\n", what, name, (unsigned long long)ns(CLOCK_MONOTONIC));
	if (write(fd, line, (size_t)n) != n)
		exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s LOG NAME sleep|cpu MS\n", argv[0]);
		return 2;
	}
	int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	uint64_t ms = strtoull(argv[4], NULL, 10);
	record(fd, "start", argv[2]);
	if (strcmp(argv[3], "cpu") == 0) {
		uint64_t until = ns(CLOCK_PROCESS_CPUTIME_ID) + ms * 1000000u;
		volatile uint64_t x = 0;
		while (ns(CLOCK_PROCESS_CPUTIME_ID) < until)
			for (int i = 0; i < 10000; i++)
				x += (uint64_t)i;
	} else {
		struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) != 0)
			;
	}
	record(fd, "end", argv[2]);
	return 0;
}
