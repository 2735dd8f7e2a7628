/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_data.c - the data interposers: send, sendto, sendmsg, recv, recvfrom,
 * recvmsg, read, write, readv, writev, their FORTIFY_SOURCE variants and
 * sendfile.  Each checks its arguments, asks the fd table whether the fd
 * is a NUSE socket (one array load for any other fd) and hands the call to
 * the data path (data.h).
 */
#include "nuse.h"

#include <limits.h>
#include <sys/sendfile.h>

#include "data.h"
#include "fdtab.h"
#include "inherit.h"
#include "lazy.h"
#include "relay.h"
#include "stale.h"

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	struct nsock *s;
	struct iovec iov;

	REAL(send);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.send(fd, buf, n, flags);
	iov.iov_base = (void *)buf;
	iov.iov_len = n;
	return data_send(s, fd, &iov, 1, flags);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;
	struct iovec iov;

	REAL(sendto);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.sendto(fd, buf, n, flags, sa, len);
	iov.iov_base = (void *)buf;
	iov.iov_len = n;
	return data_send(s, fd, &iov, 1, flags); /* TCP ignores the address */
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	struct nsock *s;

	REAL(sendmsg);
	if (m && unlikely(m->msg_controllen != 0)) {
		/* SCM_RIGHTS: another process may wait on what goes */
		each_rights_fd(m, lazy_fd_escapes);
		relay_msg_fds(m); /* a NUSE socket goes to another process */
	}
	s = fd_nuse(fd);
	if (likely(!s))
		return R.sendmsg(fd, m, flags);
	if (!m || m->msg_iovlen > IOV_MAX)
		return fail(m ? EMSGSIZE : EFAULT);
	return data_send(s, fd, m->msg_iov, (int)m->msg_iovlen, flags);
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	struct nsock *s;
	struct iovec iov;

	REAL(recv);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.recv(fd, buf, n, flags);
	iov.iov_base = buf;
	iov.iov_len = n;
	return data_recv(s, fd, &iov, 1, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;
	struct iovec iov;

	REAL(recvfrom);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.recvfrom(fd, buf, n, flags, sa, len);
	iov.iov_base = buf;
	iov.iov_len = n;
	if (len)
		*len = 0; /* TCP gives no source address */
	return data_recv(s, fd, &iov, 1, flags);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	struct nsock *s;
	ssize_t r;

	REAL(recvmsg);
	s = fd_nuse(fd);
	if (likely(!s)) {
		r = R.recvmsg(fd, m, flags);
		fd_fresh_msg(r, m); /* SCM_RIGHTS fds are new numbers */
		if (r >= 0 && m)
			adopt_msg_fds(m); /* a NUSE listener among them: take it up */
		return r;
	}
	if (!m || m->msg_iovlen > IOV_MAX)
		return fail(m ? EMSGSIZE : EFAULT);
	r = data_recv(s, fd, m->msg_iov, (int)m->msg_iovlen, flags);
	if (r >= 0) {
		m->msg_namelen = 0;
		m->msg_controllen = 0;
		m->msg_flags = 0;
	}
	return r;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	struct nsock *s;
	struct iovec iov;

	REAL(read);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.read(fd, buf, n);
	iov.iov_base = buf;
	iov.iov_len = n;
	return data_recv(s, fd, &iov, 1, 0);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	struct nsock *s;
	struct iovec iov;

	REAL(write);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.write(fd, buf, n);
	if (n == 0)
		return 0;
	iov.iov_base = (void *)buf;
	iov.iov_len = n;
	return data_send(s, fd, &iov, 1, 0);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct nsock *s;

	REAL(readv);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.readv(fd, iov, cnt);
	if (cnt < 0 || cnt > IOV_MAX)
		return fail(EINVAL);
	return data_recv(s, fd, iov, cnt, 0);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct nsock *s;

	REAL(writev);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.writev(fd, iov, cnt);
	if (cnt < 0 || cnt > IOV_MAX)
		return fail(EINVAL);
	return data_send(s, fd, iov, cnt, 0);
}

/* FORTIFY_SOURCE builds call these instead of read/recv/recvfrom. */
EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	REAL(read_chk);
	if (likely(!fd_nuse(fd)) || n > buflen)
		return R.read_chk(fd, buf, n, buflen);
	return read(fd, buf, n);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	REAL(recv_chk);
	if (likely(!fd_nuse(fd)) || n > buflen)
		return R.recv_chk(fd, buf, n, buflen, flags);
	return recv(fd, buf, n, flags);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags, struct sockaddr *sa,
			      socklen_t *len)
{
	REAL(recvfrom_chk);
	if (likely(!fd_nuse(fd)) || n > buflen)
		return R.recvfrom_chk(fd, buf, n, buflen, flags, sa, len);
	return recvfrom(fd, buf, n, flags, sa, len);
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
	struct nsock *s;

	REAL(sendfile);
	s = fd_nuse(out);
	if (likely(!s))
		return R.sendfile(out, in, off, count);
	return data_sendfile(s, out, in, off, count);
}

EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t count)
{
	struct nsock *s;

	REAL(sendfile64);
	s = fd_nuse(out);
	if (likely(!s))
		return R.sendfile64(out, in, off, count);
	return data_sendfile(s, out, in, off, count);
}
