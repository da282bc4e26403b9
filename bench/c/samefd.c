/* samefd: can one thread give a token back while another thread of the same process is
 * parked in a blocking read on the same open file?
 *
 *   samefd PATH        (the pool must hold exactly 1 token)
 *
 * Takes the token, starts a thread whose read() parks, then writes the token back from the
 * main thread. Prints {"write_returned_ms": T} and exits 0 when the write returns (the parked
 * thread then gets the token and writes it back). On a FUSE regular file opened without
 * FOPEN_STREAM the write waits for the file position lock held by the parked read, i.e. for
 * ever when this process holds the only token: the caller's timeout is the verdict. Clients
 * that read and write through one open file from two threads (jobserver-rs 0.1.26-0.1.31,
 * our cargo-like client before it opened the path twice) hit this.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static int fd;

static void *reader(void *arg)
{
	(void)arg;
	char c;
	if (read(fd, &c, 1) == 1 && write(fd, &c, 1) == 1)
		return NULL;
	perror("reader");
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH\n", argv[0]);
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	fd = open(argv[1], O_RDWR);
	char c;
	if (fd < 0 || read(fd, &c, 1) != 1) {
		perror(argv[1]);
		return 1;
	}
	pthread_t t;
	pthread_create(&t, NULL, reader, NULL);
	usleep(200000); /* the reader parks */
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	if (write(fd, &c, 1) != 1) {
		perror("write");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(t, NULL);
	printf("{\"write_returned_ms\": %.3f}\n", (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
	return 0;
}
