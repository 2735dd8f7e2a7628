/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xfer.c - the data calls made of several moves (xfer.h): sendmmsg,
 * recvmmsg, splice to and from a NUSE socket, dprintf.  Each is built on
 * the data path (data.h) and follows what Linux's does for a TCP socket
 * (net/socket.c, fs/splice.c).  It calls the data path and the base.
 */
#include "xfer.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* glibc's, for __dprintf_chk (not declared unless the program is fortified). */
int __vsnprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *fmt, va_list ap);
int __vasprintf_chk(char **s, int flag, const char *fmt, va_list ap);

#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024 /* Linux caps vlen there */
#endif

/*
 * Linux: a sendmsg per message; msg_len is each one's count; the first
 * error ends the batch, and is the result only when nothing was sent.
 */
int xfer_sendmmsg(struct nsock *s, int fd, struct mmsghdr *v, unsigned int n, int flags)
{
	unsigned int i;

	if (n > UIO_MAXIOV)
		n = UIO_MAXIOV;
	for (i = 0; i < n; i++) {
		struct msghdr *m = &v[i].msg_hdr;
		ssize_t r;

		if (m->msg_iovlen > IOV_MAX)
			r = fail(EMSGSIZE);
		else
			r = data_send(s, fd, m->msg_iov, (int)m->msg_iovlen, flags);
		if (r < 0)
			return i ? (int)i : -1;
		v[i].msg_len = (unsigned int)r;
	}
	return (int)n;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/*
 * Linux: a recvmsg per message (TCP: whatever is there, 0 at EOF);
 * MSG_WAITFORONE makes the ones after the first non-blocking; the timeout
 * is looked at only between messages (a blocking recv is not cut short)
 * and what is left of it is written back.  The first error ends the batch,
 * and is the result only when nothing was received.
 */
int xfer_recvmmsg(struct nsock *s, int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *t)
{
	struct timespec now;
	int64_t end = 0;
	unsigned int i;

	if (t) {
		if (t->tv_sec < 0 || t->tv_nsec < 0 || t->tv_nsec >= 1000000000)
			return (int)fail(EINVAL);
		clock_gettime(CLOCK_MONOTONIC, &now);
		end = (t->tv_sec || t->tv_nsec) ? ts_ns(&now) + ts_ns(t) : 0;
	}
	if (n > UIO_MAXIOV)
		n = UIO_MAXIOV;
	for (i = 0; i < n; i++) {
		struct msghdr *m = &v[i].msg_hdr;
		ssize_t r;

		if (m->msg_iovlen > IOV_MAX)
			r = fail(EMSGSIZE);
		else
			r = data_recv(s, fd, m->msg_iov, (int)m->msg_iovlen, flags & ~MSG_WAITFORONE);
		if (r < 0)
			return i ? (int)i : -1;
		m->msg_namelen = 0;
		m->msg_controllen = 0;
		m->msg_flags = 0;
		v[i].msg_len = (unsigned int)r;
		if (flags & MSG_WAITFORONE)
			flags |= MSG_DONTWAIT;
		if (t) {
			int64_t left;

			clock_gettime(CLOCK_MONOTONIC, &now);
			left = end - ts_ns(&now);
			if (left <= 0) {
				t->tv_sec = t->tv_nsec = 0;
				i++;
				break;
			}
			t->tv_sec = left / 1000000000;
			t->tv_nsec = left % 1000000000;
		}
	}
	return (int)i;
}

#define XFER_BUF 65536

/* A scratch pipe for one splice; its leftovers go with it. */
static int scratch(int p[2])
{
	return pipe2(p, O_CLOEXEC);
}

static void scratch_close(int p[2])
{
	int e = errno;

	R.close(p[0]);
	R.close(p[1]);
	errno = e;
}

/* Reads exactly n bytes that are known to be in a pipe (into buf or away). */
static void pipe_take(int fd, char *buf, size_t n)
{
	while (n > 0) {
		ssize_t r = R.read(fd, buf, n < XFER_BUF ? n : XFER_BUF);

		if (r <= 0 && !(r < 0 && errno == EINTR))
			return;
		if (r > 0)
			n -= (size_t)r;
	}
}

/*
 * pipe -> socket.  tee() copies what the pipe holds (waiting for it as
 * splice would: SPLICE_F_NONBLOCK or the pipe's O_NONBLOCK say not to;
 * 0 when the pipe is empty and has no writers) into a scratch pipe without
 * consuming it; we send those bytes (blocking as the socket is, raising
 * SIGPIPE as Linux's splice does), and only then consume from the pipe
 * exactly what the socket took.
 */
ssize_t xfer_splice_to(struct nsock *s, int fd, int pipe_in, size_t len, unsigned int flags)
{
	char *buf;
	struct iovec iov;
	ssize_t k, w;
	int q[2];

	if (len > XFER_BUF)
		len = XFER_BUF;
	if (scratch(q) < 0)
		return -1;
	k = tee(pipe_in, q[1], len, flags & SPLICE_F_NONBLOCK);
	if (k <= 0) {
		scratch_close(q);
		return k;
	}
	buf = malloc((size_t)k);
	if (!buf) {
		scratch_close(q);
		return fail(ENOMEM);
	}
	pipe_take(q[0], buf, (size_t)k);
	scratch_close(q);
	iov.iov_base = buf;
	iov.iov_len = (size_t)k;
	w = data_send(s, fd, &iov, 1, (flags & SPLICE_F_MORE) ? MSG_MORE : 0);
	if (w > 0) {
		int e = errno;

		pipe_take(pipe_in, buf, (size_t)w);
		errno = e;
	}
	free(buf);
	return w;
}

/*
 * socket -> pipe.  Peek at what the socket holds (waiting as recv would:
 * the socket's O_NONBLOCK decides, not SPLICE_F_NONBLOCK, as in Linux), put
 * it in a scratch pipe, splice that into the program's pipe (which honours
 * SPLICE_F_NONBLOCK, the pipe's O_NONBLOCK, EPIPE and SIGPIPE), and only
 * then consume from the socket exactly what the pipe took.
 */
ssize_t xfer_splice_from(struct nsock *s, int fd, int pipe_out, size_t len, unsigned int flags)
{
	struct iovec iov;
	char *buf;
	ssize_t k, w;
	int q[2];

	if (len > XFER_BUF)
		len = XFER_BUF;
	buf = malloc(len);
	if (!buf)
		return fail(ENOMEM);
	iov.iov_base = buf;
	iov.iov_len = len;
	k = data_recv(s, fd, &iov, 1, MSG_PEEK);
	if (k <= 0) {
		free(buf);
		return k;
	}
	if (scratch(q) < 0) {
		free(buf);
		return -1;
	}
	/* the scratch pipe is empty and holds 64 KiB: this does not block,
	 * and what it does not take (a smaller pipe) is simply left */
	R.fcntl(q[1], F_SETFL, O_NONBLOCK);
	k = R.write(q[1], buf, (size_t)k);
	free(buf);
	if (k <= 0) {
		scratch_close(q);
		return k < 0 ? -1 : 0;
	}
	w = R.splice(q[0], NULL, pipe_out, NULL, (size_t)k, flags);
	scratch_close(q);
	if (w > 0) {
		int e = errno;

		iov.iov_base = NULL;
		iov.iov_len = (size_t)w;
		data_recv(s, fd, &iov, 1, MSG_TRUNC | MSG_DONTWAIT); /* consume: the bytes are there */
		errno = e;
	}
	return w;
}

/*
 * glibc formats through a FILE into write(2) inside libc, past the
 * interposers: format here (a stack buffer, a heap one when longer), then
 * send it all; an error (even after part of it went) is -1, as glibc's.
 */
int xfer_vdprintf(struct nsock *s, int fd, int chk, const char *fmt, va_list ap)
{
	char sb[1024], *p = sb;
	struct iovec iov;
	size_t done = 0;
	va_list aq;
	int n;

	va_copy(aq, ap);
	if (chk >= 0)
		n = __vsnprintf_chk(sb, sizeof(sb), chk, sizeof(sb), fmt, aq);
	else
		n = vsnprintf(sb, sizeof(sb), fmt, aq);
	va_end(aq);
	if (n < 0)
		return n;
	if ((size_t)n >= sizeof(sb)) {
		va_copy(aq, ap);
		n = chk >= 0 ? __vasprintf_chk(&p, chk, fmt, aq) : vasprintf(&p, fmt, aq);
		va_end(aq);
		if (n < 0)
			return n;
	}
	while (done < (size_t)n) {
		ssize_t r;

		iov.iov_base = p + done;
		iov.iov_len = (size_t)n - done;
		r = data_send(s, fd, &iov, 1, 0);
		if (r < 0) {
			n = -1;
			break;
		}
		done += (size_t)r;
	}
	if (p != sb) {
		int e = errno;

		free(p);
		errno = e;
	}
	return n;
}
