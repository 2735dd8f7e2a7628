/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_fd.c - the fd interposers: close, dup, dup2, dup3, close_range and
 * closefrom.  They keep the fd table in step with the program's fds
 * (fdtab.h), let go of a NUSE socket at its last close (drop_fd,
 * control.h), and keep the session's control socket out of close sweeps.
 */
#include "nuse.h"

#include <fcntl.h>

#include "control.h"
#include "fdtab.h"
#include "lazy.h"
#include "relay.h"
#include "session.h"
#include "spare.h"
#include "stale.h"
#include "wake.h"

/*
 * A NUSE socket made a standard stream (inetd-style handlers, bash's
 * `>&3`) is written by stdio, inside libc where the shim cannot see: it is
 * relayed (relay.h) so that those bytes arrive.
 */
static void stdio_handoff(int fd)
{
	struct nsock *s = fd_nuse(fd);

	if (s && !in_vfork_child())
		relay_sock(s);
}

EXPORT int close(int fd)
{
	REAL(close);
	lazy_fd_closed(fd);
	if (unlikely(fd_get(fd) != NULL) && !in_vfork_child())
		drop_fd(fd);
	else if (unlikely((fd == S.ctl && fd >= 0) || wake_owns(fd) || spare_owns(fd))) {
		/* closefrom()-style sweeps must not take our session (or a
		 * peer's waker, wake.h) with them */
		return 0;
	}
	return R.close(fd);
}

EXPORT int dup(int fd)
{
	int r;

	REAL(dup);
	r = fd_fresh(R.dup(fd));
	if (r >= 0)
		lazy_fd_escapes(fd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

EXPORT int dup2(int fd, int nfd)
{
	int r;

	REAL(dup2);
	if (fd != nfd) {
		wake_yield(nfd);
		spare_yield(nfd);
	}
	if (fd != nfd && unlikely(lazy_known(nfd)) && R.fcntl(fd, F_GETFD) >= 0)
		lazy_fd_closed(nfd);
	if (fd != nfd && unlikely(fd_get(nfd) != NULL) && R.fcntl(fd, F_GETFD) >= 0 && !in_vfork_child())
		drop_fd(nfd);
	r = R.dup2(fd, nfd);
	if (r >= 0 && fd != nfd)
		lazy_fd_escapes(fd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	if (r >= 0 && unlikely(r <= 2))
		stdio_handoff(r);
	return r;
}

EXPORT int dup3(int fd, int nfd, int flags)
{
	int r;

	REAL(dup3);
	if (fd != nfd) {
		wake_yield(nfd);
		spare_yield(nfd);
	}
	if (fd != nfd && unlikely(lazy_known(nfd)) && R.fcntl(fd, F_GETFD) >= 0)
		lazy_fd_closed(nfd);
	if (fd != nfd && unlikely(fd_get(nfd) != NULL) && R.fcntl(fd, F_GETFD) >= 0 && !in_vfork_child())
		drop_fd(nfd);
	r = R.dup3(fd, nfd, flags);
	if (r >= 0 && fd != nfd)
		lazy_fd_escapes(fd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	if (r >= 0 && unlikely(r <= 2))
		stdio_handoff(r);
	return r;
}

/*
 * close_range()/closefrom(): sweeps by daemons and by children before exec.
 * Tracked sockets in the range are let go of as by close(), and the control
 * socket is kept out of the sweep.
 */
/* The first fd in [from, last] that the shim keeps (its control socket, a
 * waker, a spare pair), or ~0u. */
static unsigned next_kept(unsigned from, unsigned last)
{
	unsigned ctl = S.ctl >= 0 ? (unsigned)S.ctl : ~0u, w = wake_next(from, last), p = spare_next(from, last);

	if (ctl < from || ctl > last)
		ctl = ~0u;
	if (p < w)
		w = p;
	return ctl < w ? ctl : w;
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	unsigned i, hi;
	int r;

	REAL(close_range);
	if (!(flags & CLOSE_RANGE_CLOEXEC) && first < (unsigned)g_tabhi && !in_vfork_child()) {
		hi = last < (unsigned)g_tabhi - 1 ? last : (unsigned)g_tabhi - 1;
		for (i = first; i <= hi; i++)
			if (fd_get((int)i)) {
				lazy_fd_closed((int)i);
				drop_fd((int)i);
			}
	}
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		lazy_range_closed(first, last);
	/* The fds we keep split the range: close what lies between. */
	for (;;) {
		i = next_kept(first, last);
		if (i == ~0u)
			break;
		r = i > first ? R.close_range(first, i - 1, flags) : 0;
		if (r != 0 || i == last)
			return r;
		first = i + 1;
	}
	return R.close_range(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
	if (lowfd < 0)
		lowfd = 0;
	close_range((unsigned)lowfd, ~0u, 0);
}
