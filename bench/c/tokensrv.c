/* tokensrv: the smallest token server we can write on a FUSE-mounted regular file.
 *
 *   tokensrv FILE TOKENS [write-first|stream]
 *
 * It is the baseline "what this transport costs" for bench/: libfuse3's low-level API, one
 * thread (fuse_session_loop), direct_io + nonseekable files, one byte per read, blocking reads
 * parked and answered on the next write, O_NONBLOCK reads answered EAGAIN, interrupts answered
 * EINTR, and poll with a notify on the 0 -> >0 transition. It keeps no per-process accounting,
 * reclaims nothing and has no policy: everything steved does on top of this is what the
 * comparison prices. Prints "ready" on stdout once mounted; SIGTERM/SIGINT unmount and exit.
 *
 * A write that frees a token for a parked reader answers the reader first, then the writer.
 * "write-first" answers the writer first (for the hand-off benchmark: it shows what that order
 * alone costs a waiter when everything shares one CPU).
 *
 * "stream" opens files with FOPEN_STREAM besides direct_io and nonseekable. libfuse 3.14's
 * fuse_file_info has no bit for it, so the open reply (struct fuse_open_out) is sent as a
 * buffer. Without it the kernel serialises read() and write() on one open file shared by
 * threads (the file position lock of regular files): see bench/c/samefd.c.
 */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long tokens;
static int write_first;
static int stream;

/* Parked blocking reads, oldest first. */
struct parked {
	fuse_req_t req;
	struct parked *prev, *next;
};
static struct parked queue = { NULL, &queue, &queue };

/* One poll handle per open file that polled while no token was free. */
struct pollent {
	uint64_t fh;
	struct fuse_pollhandle *ph;
};
static struct pollent *polls;
static size_t npolls, cappolls;
static uint64_t next_fh = 1;

/* Open flags of the kernel's FUSE protocol (include/uapi/linux/fuse.h). */
#define FOPEN_DIRECT_IO_ (1u << 0)
#define FOPEN_NONSEEKABLE_ (1u << 2)
#define FOPEN_STREAM_ (1u << 4)

static void unlink_parked(struct parked *p)
{
	p->prev->next = p->next;
	p->next->prev = p->prev;
	free(p);
}

static void on_interrupt(fuse_req_t req, void *data)
{
	(void)req;
	struct parked *p = data;
	fuse_req_t r = p->req;
	unlink_parked(p);
	fuse_reply_err(r, EINTR);
}

static void notify_pollers(void)
{
	for (size_t i = 0; i < npolls; i++) {
		fuse_lowlevel_notify_poll(polls[i].ph);
		fuse_pollhandle_destroy(polls[i].ph);
	}
	npolls = 0;
}

static void drop_poll(uint64_t fh)
{
	for (size_t i = 0; i < npolls; i++) {
		if (polls[i].fh == fh) {
			fuse_pollhandle_destroy(polls[i].ph);
			polls[i] = polls[--npolls];
			return;
		}
	}
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st;
	memset(&st, 0, sizeof st);
	st.st_ino = ino;
	st.st_mode = S_IFREG | 0666;
	st.st_nlink = 1;
	fuse_reply_attr(req, &st, 3600.0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fi->fh = next_fh++;
	if (stream) {
		/* struct fuse_open_out: fh, open_flags, padding (include/uapi/linux/fuse.h). */
		struct {
			uint64_t fh;
			uint32_t open_flags, padding;
		} out = { fi->fh, FOPEN_DIRECT_IO_ | FOPEN_NONSEEKABLE_ | FOPEN_STREAM_, 0 };
		fuse_reply_buf(req, (const char *)&out, sizeof out);
		return;
	}
	fi->direct_io = 1;
	fi->nonseekable = 1;
	fuse_reply_open(req, fi);
}

static const char token_byte = '+';

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)off;
	if (size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (tokens > 0) {
		tokens--;
		fuse_reply_buf(req, &token_byte, 1);
		return;
	}
	if (fi->flags & O_NONBLOCK) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	struct parked *p = malloc(sizeof *p);
	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p->req = req;
	p->next = &queue;
	p->prev = queue.prev;
	queue.prev->next = p;
	queue.prev = p;
	/* Calls on_interrupt at once if the interrupt already arrived. */
	fuse_req_interrupt_func(req, on_interrupt, p);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	(void)buf;
	(void)off;
	(void)fi;
	size_t n = size;
	if (write_first)
		fuse_reply_write(req, size);
	while (n > 0 && queue.next != &queue) {
		struct parked *p = queue.next;
		fuse_req_t r = p->req;
		unlink_parked(p);
		fuse_reply_buf(r, &token_byte, 1);
		n--;
	}
	long before = tokens;
	tokens += (long)n;
	if (!write_first)
		fuse_reply_write(req, size);
	if (before <= 0 && tokens > 0)
		notify_pollers();
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
	(void)ino;
	unsigned revents = POLLOUT | POLLWRNORM;
	if (tokens > 0) {
		revents |= POLLIN | POLLRDNORM;
		if (ph)
			fuse_pollhandle_destroy(ph);
	} else if (ph) {
		drop_poll(fi->fh);
		if (npolls == cappolls) {
			cappolls = cappolls ? 2 * cappolls : 64;
			polls = realloc(polls, cappolls * sizeof *polls);
			if (!polls)
				abort();
		}
		polls[npolls].fh = fi->fh;
		polls[npolls].ph = ph;
		npolls++;
	}
	fuse_reply_poll(req, revents);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	drop_poll(fi->fh);
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.poll = op_poll,
	.release = op_release,
};

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "write-first") != 0 && strcmp(argv[3], "stream") != 0)) {
		fprintf(stderr, "usage: %s FILE TOKENS [write-first|stream]\n", argv[0]);
		return 2;
	}
	write_first = argc == 4 && strcmp(argv[3], "write-first") == 0;
	stream = argc == 4 && strcmp(argv[3], "stream") == 0;
	tokens = strtol(argv[2], NULL, 10);
	char *fargv[] = { argv[0], "-o", "allow_other,default_permissions,fsname=tokensrv,subtype=tokensrv", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		return 1;
	if (fuse_session_mount(se, argv[1]) != 0)
		return 1;
	printf("ready\n");
	fflush(stdout);
	int rc = fuse_session_loop(se);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	return rc < 0 ? 1 : 0;
}
