/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_wait.c - the wait interposers: epoll_wait, epoll_pwait, epoll_pwait2,
 * poll, ppoll, select, pselect (and the fortified __poll_chk and
 * __ppoll_chk), for lazy readiness (lazy.h).
 *
 * epoll_wait on a set of ours first reports its lazy members whose rings
 * hold data (the daemon may have left their bytes out), merged with what
 * the kernel reports without waiting; with nothing to report it spins a
 * while (the session's spin, on the scan: what comes then needs no byte
 * from the daemon), then watches the set's lazy sockets
 * (lazy_watch_begin), scans once more, and only then sleeps in the
 * kernel.  poll and select make the NUSE sockets (and our
 * epoll sets) they are given loud for good first: the kernel's poll then
 * sees all (poll adds the hang-up bits a socket's state already shows).
 * Every other wait goes straight to the kernel.
 */
#include "nuse.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/select.h>

#include "fdtab.h"
#include "lazy.h"
#include "session.h"
#include "signals.h"
#include "sockstate.h"

enum { W_WAIT, W_PWAIT, W_PWAIT2 };

static int real_epoll(int kind, int epfd, struct epoll_event *ev, int max, int ms, const struct timespec *ts,
		      const sigset_t *mask)
{
	switch (kind) {
	case W_WAIT:
		REAL(epoll_wait);
		return R.epoll_wait(epfd, ev, max, ms);
	case W_PWAIT:
		REAL(epoll_pwait);
		return R.epoll_pwait(epfd, ev, max, ms, mask);
	default:
		REAL(epoll_pwait2);
		if (R.epoll_pwait2)
			return R.epoll_pwait2(epfd, ev, max, ts, mask);
		return (int)syscall(SYS_epoll_pwait2, epfd, ev, max, ts, mask, _NSIG / 8);
	}
}

/* ev[0..k) came from the scan and ev[k..k+n) from the kernel: a member
 * the kernel reports too (its byte was there) becomes one entry. */
static int merge(struct epoll_event *ev, int k, int n)
{
	int i, j, out = k;

	if (n < 0)
		return k;
	for (j = k; j < k + n; j++) {
		for (i = 0; i < k; i++)
			if (ev[i].data.u64 == ev[j].data.u64)
				break;
		if (i < k)
			ev[i].events |= ev[j].events;
		else
			ev[out++] = ev[j];
	}
	return out;
}

static int lz_epoll(int kind, int epfd, struct epoll_event *ev, int max, int ms, const struct timespec *ts,
		    const sigset_t *mask)
{
	static const struct timespec zero;
	struct lazy_watch w;
	uint64_t deadline = 0;
	int k, r, e, n, et;

	if (likely(!lazy_own_set(epfd)) || max <= 0)
		return real_epoll(kind, epfd, ev, max, ms, ts, mask);
	k = lazy_scan(epfd, ev, max);
	if (!k && (kind == W_PWAIT2 ? ts && !ts->tv_sec && !ts->tv_nsec : ms == 0))
		return real_epoll(kind, epfd, ev, max, ms, ts, mask);
	/* The timeout as a deadline: an edge the scan had reported already
	 * is dropped (lazy_note_edges), and the wait goes on. */
	if (!k && (kind == W_PWAIT2 ? ts != NULL : ms > 0)) {
		uint64_t t = kind == W_PWAIT2 ? (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec
					      : (uint64_t)ms * 1000000ull;

		deadline = now_ns() + t;
	}
	/* Spin first (--shim-spin): data that comes within it is taken
	 * without a sleep, so without the daemon's readiness byte.  A
	 * handler that runs meanwhile interrupts the wait, as it would
	 * Linux's (epoll waits never restart).  Not with a signal mask to
	 * wait under: signals the mask would hold back could run now. */
	if (!k && !mask && S.spin_ns && lazy_has_lazy(epfd)) {
		uint64_t until = now_ns() + S.spin_ns;
		unsigned si = g_sig_intr, sr = g_sig_rest;
		int i;

		for (i = 1;; i++) {
			cpu_relax();
			if ((k = lazy_scan(epfd, ev, max)) != 0)
				break;
			if (g_sig_intr != si || g_sig_rest != sr) {
				errno = EINTR;
				return -1;
			}
			if ((i & 15) == 0) {
				uint64_t n0 = now_ns();

				if (n0 >= until || (deadline && n0 >= deadline))
					break;
				spin_yield();
			}
		}
	}
	while (!k) {
		struct timespec left;
		int lms = ms;

		if (deadline) {
			uint64_t n0 = now_ns(), d = deadline > n0 ? deadline - n0 : 0;

			left.tv_sec = (time_t)(d / 1000000000ull);
			left.tv_nsec = (long)(d % 1000000000ull);
			lms = (int)((d + 999999) / 1000000);
		}
		/* Watched, then scanned again: data published after the daemon
		 * saw us watch gets its byte (Dekker). */
		lazy_watch_begin(epfd, &w);
		k = lazy_scan(epfd, ev, max);
		if (k) {
			lazy_watch_end(epfd, &w);
			break;
		}
		r = real_epoll(kind, epfd, ev, max, lms, deadline ? &left : ts, mask);
		e = errno;
		/* still watched: what comes after this look gets a byte, an
		 * edge the kernel reports next */
		n = lazy_note_edges(epfd, ev, r);
		lazy_watch_end(epfd, &w);
		errno = e;
		if (n != 0 || r <= 0 || (deadline && now_ns() >= deadline))
			return n;
	}
	if (k == max)
		return k;
	e = errno;
	/* The kernel's edges of edge-triggered members are noted while we
	 * watch them, as above. */
	et = lazy_has_edges(epfd);
	if (et)
		lazy_watch_begin(epfd, &w);
	n = real_epoll(kind, epfd, ev + k, max - k, 0, &zero, mask);
	if (et) {
		n = lazy_note_edges(epfd, ev + k, n);
		lazy_watch_end(epfd, &w);
	}
	r = merge(ev, k, n);
	errno = e;
	return r;
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int ms)
{
	return lz_epoll(W_WAIT, epfd, ev, max, ms, NULL, NULL);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int ms, const sigset_t *mask)
{
	return lz_epoll(W_PWAIT, epfd, ev, max, ms, NULL, mask);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *ts, const sigset_t *mask)
{
	return lz_epoll(W_PWAIT2, epfd, ev, max, -1, ts, mask);
}

/* A NUSE socket or one of our epoll sets the kernel's poll is to watch
 * becomes loud for good. */
static void loud_if_ours(int fd)
{
	if (unlikely(fd_get(fd) != NULL) || unlikely(lazy_own_set(fd)))
		lazy_fd_escapes(fd);
}

static void poll_nuse(struct pollfd *fds, nfds_t n)
{
	nfds_t i;

	for (i = 0; fds && i < n; i++)
		if (fds[i].fd >= 0)
			loud_if_ours(fds[i].fd);
}

/*
 * The daemon signals a peer's FIN or a reset in steps (a readiness byte,
 * then the pair's shutdown: PROTOCOL.md "Hang-ups"), so a poll woken by
 * the byte may find the app fd readable and not yet hung up, where Linux
 * reports both at once.  The socket's state already says so: the bits a
 * NUSE socket that polls readable will show once its pair is shut (a
 * reset: IN|OUT|HUP|RDHUP) are added here.
 */
static int poll_hangups(struct pollfd *fds, nfds_t n, int r)
{
	nfds_t i;

	for (i = 0; r > 0 && i < n; i++) {
		struct nsock *s;
		uint32_t st;

		if (!(fds[i].revents & POLLIN) || (fds[i].revents & POLLNVAL) || fds[i].fd < 0 ||
		    likely((s = fd_get(fds[i].fd)) == NULL) || s->kind != K_NUSE || !s->sh || s->listening)
			continue;
		st = st_load(s);
		if (!(st & NUSE_SS_CONNECTED))
			continue;
		if (st & (NUSE_SS_RD_EOF | NUSE_SS_RESET))
			fds[i].revents |= fds[i].events & POLLRDHUP;
		if (st & NUSE_SS_RESET)
			fds[i].revents |= POLLHUP | (fds[i].events & (POLLOUT | POLLWRNORM));
	}
	return r;
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int ms)
{
	REAL(poll);
	poll_nuse(fds, n);
	return poll_hangups(fds, n, R.poll(fds, n, ms));
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	REAL(ppoll);
	poll_nuse(fds, n);
	return poll_hangups(fds, n, R.ppoll(fds, n, ts, mask));
}

/* _FORTIFY_SOURCE's poll and ppoll: the buffer check, then ours. */
EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int ms, size_t len)
{
	if (len / sizeof(*fds) < n)
		abort();
	return poll(fds, n, ms);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask, size_t len)
{
	if (len / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, ts, mask);
}

static void select_nuse(int nfds, fd_set *r, fd_set *w, fd_set *x)
{
	int fd;

	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	for (fd = 0; fd < nfds; fd++)
		if ((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (x && FD_ISSET(fd, x)))
			loud_if_ours(fd);
}

EXPORT int select(int nfds, fd_set *r, fd_set *wr, fd_set *x, struct timeval *tv)
{
	REAL(select);
	select_nuse(nfds, r, wr, x);
	return R.select(nfds, r, wr, x, tv);
}

EXPORT int pselect(int nfds, fd_set *r, fd_set *wr, fd_set *x, const struct timespec *ts, const sigset_t *mask)
{
	REAL(pselect);
	select_nuse(nfds, r, wr, x);
	return R.pselect(nfds, r, wr, x, ts, mask);
}
