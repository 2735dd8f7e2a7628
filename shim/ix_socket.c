/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_socket.c - the interposers of a socket's life: socket, bind, listen,
 * connect, accept/accept4, shutdown, getsockname, getpeername.  Each is
 * thin: the real call for an fd the shim does not track, else a call into
 * the part that owns the work -- the fd table for socket(), the decision
 * (decide.h) for bind/listen/connect, the control calls (control.h) for
 * the rest; connect and accept first mark the signal handlers' counts
 * (signals.h: a signal from then on may interrupt them).  Only TCP over
 * IPv4/IPv6 is tracked (socket() says so); a datagram path would be
 * admitted there (see data.h).
 */
#include "nuse.h"

#include <netinet/in.h>

#include "control.h"
#include "decide.h"
#include "fdtab.h"
#include "relay.h"
#include "signals.h"
#include "stale.h"

EXPORT int socket(int domain, int type, int protocol)
{
	int fd, base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct nsock *s;

	REAL(socket);
	fd = fd_fresh(R.socket(domain, type, protocol));
	if (fd < 0 || (domain != AF_INET && domain != AF_INET6) || base != SOCK_STREAM ||
	    (protocol != 0 && protocol != IPPROTO_TCP) || fd >= g_tabmax || in_vfork_child())
		return fd;
	s = nsock_new(domain);
	if (!s)
		return fd;
	s->nonblock = !!(type & SOCK_NONBLOCK);
	pthread_mutex_lock(&g_tablock);
	tab_put_locked(fd, s);
	pthread_mutex_unlock(&g_tablock);
	return fd;
}

EXPORT int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;

	REAL(bind);
	s = fd_get(fd);
	if (likely(!s) || !sa)
		return R.bind(fd, sa, len);
	return sock_bind(s, fd, sa, len);
}

EXPORT int listen(int fd, int backlog)
{
	struct nsock *s;

	REAL(listen);
	s = fd_get(fd);
	if (likely(!s))
		return R.listen(fd, backlog);
	return sock_listen(s, fd, backlog);
}

EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;

	REAL(connect);
	s = fd_get(fd);
	if (likely(!s) || !sa)
		return R.connect(fd, sa, len);
	sig_call_begin(); /* a signal from here on may interrupt it */
	return sock_connect(s, fd, sa, len);
}

EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	struct nsock *s;

	REAL(accept4);
	s = fd_nuse(fd);
	if (likely(!s))
		return fd_fresh(R.accept4(fd, sa, len, flags));
	sig_call_begin();
	return nuse_accept(s, fd, sa, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(accept);
	s = fd_nuse(fd);
	if (likely(!s))
		return fd_fresh(R.accept(fd, sa, len));
	sig_call_begin();
	return nuse_accept(s, fd, sa, len, 0);
}

EXPORT int shutdown(int fd, int how)
{
	struct nsock *s;

	REAL(shutdown);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.shutdown(fd, how);
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return (int)fail(EINVAL);
	return nuse_shutdown(s, fd, how);
}

/* A relayed NUSE socket (handed to this process) is a unix socket to the
 * kernel: its TCP names come from the daemon (relay.h). */
static int unix_or_relay(int fd, int peer, socklen_t cap, int r, struct sockaddr *sa, socklen_t *len)
{
	if (r == 0 && *len >= sizeof(sa_family_t) && cap >= sizeof(sa_family_t) && sa->sa_family == AF_UNIX) {
		socklen_t l = cap;

		if (relay_name(fd, peer, sa, &l) == 0)
			*len = l;
	}
	return r;
}

EXPORT int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(getsockname);
	s = fd_nuse(fd);
	if (likely(!s)) {
		socklen_t cap = len ? *len : 0;

		return unix_or_relay(fd, 0, cap, R.getsockname(fd, sa, len), sa, len);
	}
	return nuse_name(s, NUSE_OP_GETSOCKNAME, sa, len);
}

EXPORT int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(getpeername);
	s = fd_nuse(fd);
	if (likely(!s)) {
		socklen_t cap = len ? *len : 0;

		return unix_or_relay(fd, 1, cap, R.getpeername(fd, sa, len), sa, len);
	}
	return nuse_name(s, NUSE_OP_GETPEERNAME, sa, len);
}
