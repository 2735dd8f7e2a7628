/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_more.c - the interposers of the data calls made of several moves:
 * sendmmsg, recvmmsg, splice, dprintf/vdprintf and their FORTIFY_SOURCE
 * variants.  Before these, libc or the kernel moved the bytes over the
 * socketpair end behind the shim's back: lost sends, the readiness byte
 * read as data.  Each is the real call unless the fd table says the fd is
 * a NUSE socket; then the argument checks Linux makes, in its order, and
 * the work in xfer.c.
 */
#include "nuse.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fdtab.h"
#include "xfer.h"

EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags)
{
	struct nsock *s;

	REAL(sendmmsg);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.sendmmsg(fd, v, n, flags);
	if (n && !v)
		return (int)fail(EFAULT);
	return xfer_sendmmsg(s, fd, v, n, flags);
}

EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *t)
{
	struct nsock *s;

	REAL(recvmmsg);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.recvmmsg(fd, v, n, flags, t);
	if (n && !v)
		return (int)fail(EFAULT);
	return xfer_recvmmsg(s, fd, v, n, flags, t);
}

/* -1: not a valid fd; else whether it is a pipe (or FIFO) and its O_ACCMODE. */
static int pipe_end(int fd, int *acc)
{
	struct stat st;
	int fl;

	if (fstat(fd, &st) < 0 || (fl = R.fcntl(fd, F_GETFL)) < 0)
		return -1;
	*acc = fl & O_ACCMODE;
	return S_ISFIFO(st.st_mode);
}

#define SPLICE_F_ALL (SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT)

/*
 * Linux's checks, in its order: len 0, flags, bad fds, an offset on a pipe
 * (ESPIPE), the pipe end's access mode (EBADF), an offset on the socket (a
 * socket has no position: EINVAL), neither side a pipe (EINVAL).
 */
EXPORT ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t len, unsigned int flags)
{
	struct nsock *si, *so;
	int acc = O_RDWR, other, ip = 0, op = 0;

	REAL(splice);
	si = fd_nuse(in);
	so = fd_nuse(out);
	if (likely(!si && !so))
		return R.splice(in, off_in, out, off_out, len, flags);
	if (!len)
		return 0;
	if (flags & ~SPLICE_F_ALL)
		return fail(EINVAL);
	if (si && so)
		return fail(EINVAL); /* neither is a pipe */
	other = si ? pipe_end(out, &acc) : pipe_end(in, &acc);
	if (other < 0)
		return fail(EBADF);
	if (si)
		op = other;
	else
		ip = other;
	if ((ip && off_in) || (op && off_out))
		return fail(ESPIPE);
	if ((so && acc == O_WRONLY) || (si && acc == O_RDONLY))
		return fail(EBADF);
	if ((si && off_in) || (so && off_out))
		return fail(EINVAL);
	if (ip)
		return xfer_splice_to(so, out, in, len, flags);
	if (op)
		return xfer_splice_from(si, in, out, len, flags);
	return fail(EINVAL);
}

EXPORT int vdprintf(int fd, const char *fmt, va_list ap)
{
	struct nsock *s;

	REAL(vdprintf);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.vdprintf(fd, fmt, ap);
	return xfer_vdprintf(s, fd, -1, fmt, ap);
}

EXPORT int dprintf(int fd, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vdprintf(fd, fmt, ap);
	va_end(ap);
	return r;
}

/* FORTIFY_SOURCE builds call these instead of dprintf/vdprintf. */
EXPORT int __vdprintf_chk(int fd, int flag, const char *fmt, va_list ap)
{
	struct nsock *s;

	REAL(vdprintf_chk);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.vdprintf_chk(fd, flag, fmt, ap);
	return xfer_vdprintf(s, fd, flag, fmt, ap);
}

EXPORT int __dprintf_chk(int fd, int flag, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = __vdprintf_chk(fd, flag, fmt, ap);
	va_end(ap);
	return r;
}
