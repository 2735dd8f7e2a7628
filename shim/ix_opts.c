/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_opts.c - the option interposers: setsockopt, getsockopt, fcntl,
 * fcntl64, ioctl and epoll_ctl.  Options of a NUSE socket go to its control calls
 * (control.h), those of an undecided one to the decision (decide.h);
 * fcntl/ioctl track O_NONBLOCK and dup'd fds in the fd table (a number
 * F_DUPFD gives out passes fd_fresh, stale.h) and answer FIONREAD,
 * TIOCOUTQ and SIOCOUTQNSD from the data path (data.h); epoll_ctl records
 * an undecided socket's registrations for the decision.
 */
#include "nuse.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <stdarg.h>
#include <sys/ioctl.h>

#include "control.h"
#include "options.h"
#include "data.h"
#include "decide.h"
#include "fdtab.h"
#include "lazy.h"
#include "stale.h"
#include "wake.h"

EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct nsock *s;

	REAL(setsockopt);
	s = fd_get(fd);
	if (likely(!s))
		return R.setsockopt(fd, level, name, val, len);
	if (s->kind == K_NUSE)
		return ret_err(nuse_setopt(s, level, name, val, len));
	return undecided_setsockopt(s, fd, level, name, val, len);
}

EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct nsock *s;

	REAL(getsockopt);
	s = fd_get(fd);
	if (likely(!s) || s->kind != K_NUSE) {
		if (s && level == SOL_SOCKET && name == SO_BINDTODEVICE && s->bindtodev && val && len)
			return put_dev(val, len);
		return R.getsockopt(fd, level, name, val, len);
	}
	return nuse_getsockopt(s, fd, level, name, val, len);
}

static int nuse_fcntl(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
	struct nsock *s = fd_get(fd);
	int r;

	if (likely(!s)) {
		if (unlikely(cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
			r = fd_fresh(real(fd, cmd, arg));
			if (r >= 0)
				lazy_fd_escapes(fd); /* an epoll set under two numbers */
			return r;
		}
		return real(fd, cmd, arg);
	}
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		r = fd_fresh(real(fd, cmd, arg));
		if (r >= 0) {
			lazy_fd_escapes(fd);
			dup_track(fd, r);
		}
		return r;
	case F_SETFL:
		r = real(fd, cmd, arg);
		if (r == 0)
			s->nonblock = !!((long)arg & O_NONBLOCK);
		if (r == 0 && ((long)arg & O_ASYNC))
			lazy_fd_escapes(fd); /* SIGIO comes from the fd's own readiness */
		return r;
	default:
		return real(fd, cmd, arg);
	}
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	REAL(fcntl);
	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return nuse_fcntl(R.fcntl, fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	REAL(fcntl64);
	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return nuse_fcntl(R.fcntl64 ? R.fcntl64 : R.fcntl, fd, cmd, arg);
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
	struct nsock *s;
	va_list ap;
	void *arg;
	int r;

	REAL(ioctl);
	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	s = fd_get(fd);
	if (likely(!s))
		return R.ioctl(fd, req, arg);
	if (req == FIONBIO) {
		r = R.ioctl(fd, req, arg);
		if (r == 0 && arg)
			s->nonblock = !!*(int *)arg;
		return r;
	}
	if (req == FIOASYNC) {
		r = R.ioctl(fd, req, arg);
		if (r == 0 && arg && *(int *)arg)
			lazy_fd_escapes(fd);
		return r;
	}
	if (s->kind == K_NUSE && (req == FIONREAD || req == TIOCOUTQ || req == SIOCOUTQNSD)) {
		uint64_t used;

		if (nuse_listener(s))
			return (int)fail(EINVAL); /* as Linux's listener */
		if (!arg)
			return (int)fail(EFAULT);
		/* SIOCOUTQNSD (not sent yet): the shim sees the tx ring, not
		 * the engine's queue, so it is TIOCOUTQ's count. */
		used = data_queued(s, req == FIONREAD);
		*(int *)arg = used > INT_MAX ? INT_MAX : (int)used;
		return 0;
	}
	return R.ioctl(fd, req, arg);
}

/*
 * epoll_ctl(): an undecided socket's registrations are remembered, so that
 * they follow it into NUSE (decide.c); every other fd costs one lookup.
 */
EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct nsock *s;
	int r;

	REAL(epoll_ctl);
	r = R.epoll_ctl(epfd, op, fd, ev);
	if (r != 0)
		return r;
	if (likely((s = fd_get(fd)) == NULL)) {
		if (unlikely(lazy_own_set(fd)))
			lazy_epoll_ctl(epfd, op, fd, ev); /* a set of ours nested in another */
		return r;
	}
	lazy_epoll_ctl(epfd, op, fd, ev);
	/* in_vfork_child is a getpid(): only when there is something to do
	 * (programs such as redis-benchmark call epoll_ctl five times a
	 * request) */
	if (s->kind == K_UNDECIDED && !in_vfork_child())
		undecided_epoll(s, epfd, op, fd, ev);
	if (op != EPOLL_CTL_DEL && ev && (ev->events & EPOLLET) && !atomic_load(&s->et) && !in_vfork_child())
		wake_edge_triggered(s);
	return r;
}
