/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nuse.c - libnuse.so: the LD_PRELOAD shim.  All of it is C; the Go in
 * shim.go only makes cgo build a shared library.  shim/PROTOCOL.md is the
 * contract with the daemon; this file follows it.
 *
 * Every TCP socket starts as a real kernel socket, "undecided", and is
 * recorded in an array indexed by fd.  At bind/listen/connect the rules
 * decide: the kernel (the entry is dropped and the fd is never looked at
 * again) or NUSE (a socketpair end is dup3'd over the fd and the socket
 * lives in the daemon).  Any other fd costs one array load per call.
 *
 * Choices PROTOCOL.md leaves open, made here:
 *  - Readiness byte: the daemon writes one byte per sig NONE->SET, so the
 *    shim reads exactly one byte per SET->NONE (waiting briefly if it is
 *    still in flight).  Draining more could eat the byte of a newer SET.
 *  - CLOSE is awaited like any command; listen() without bind() sends a
 *    BIND of the wildcard first; a bind done before the decision is replayed.
 *  - Options the daemon does not carry (ENOPROTOOPT at a known level) are
 *    accepted, as Linux would; SO_RCVTIMEO/SNDTIMEO/BINDTODEVICE stay here.
 *  - fork(): children share the session.  Control exchanges are serialized
 *    across processes (robust process-shared mutex) and a socket's CLOSE is
 *    sent by the last process that lets go of it (shared per-slot counts,
 *    raised at fork, lowered at close, exec and exit).
 *  - Every blocking wait re-checks in slices of at most 1 s and reminds the
 *    daemon of the socket after an idle slice: a lost event costs a slice.
 */
#include "nuse.h"

#include <arpa/inet.h>

#include <dlfcn.h>

#include <errno.h>

#include <fcntl.h>

#include <limits.h>

#include <linux/futex.h>

#include <net/if.h>

#include <netinet/in.h>

#include <netinet/tcp.h>

#include <poll.h>

#include <sched.h>

#include <signal.h>

#include <stdarg.h>

#include <stdio.h>

#include <stdlib.h>

#include <string.h>

#include <sys/ioctl.h>

#include <sys/mman.h>

#include <sys/resource.h>

#include <sys/sendfile.h>

#include <sys/syscall.h>

#include <sys/un.h>

#include <time.h>

#include <unistd.h>

#include "cmd.h"
#include "data.h"

#include "fdtab.h"

#include "session.h"

#include "ring.h"

#include "rules.h"

static struct nuse_rules g_rules;

static int g_rules_ok; /* rules parsed without error */

/* This process lets go of s: 1 if no other process holds it any more. */
static int procs_release(struct nsock *s)
{
	unsigned v = atomic_load(&g_sh->procs[s->slot]);

	while (v > 0 && !atomic_compare_exchange_weak(&g_sh->procs[s->slot], &v, v - 1))
		;
	return v <= 1;
}

/* ---- the decision ---------------------------------------------------- */

static int addr_key(const struct sockaddr *sa, socklen_t len, uint8_t a[16], uint16_t *port)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;

		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &in->sin_addr, 4);
		*port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		memcpy(a, &in6->sin6_addr, 16);
		*port = ntohs(in6->sin6_port);
		return 0;
	}
	return -1;
}

static int is_wildcard_port0(const struct sockaddr *sa, socklen_t len)
{
	uint8_t a[16], z[16] = {0};
	uint16_t port;

	if (addr_key(sa, len, a, &port))
		return 0;
	if (port)
		return 0;
	if (sa->sa_family == AF_INET)
		return !memcmp(a + 12, z, 4);
	return !memcmp(a, z, 16);
}

/* 1: NUSE, 0: kernel.  Logs the decision with NUSE_DEBUG=1. */
static int decide(struct nsock *s, int fd, int dir, const struct sockaddr *sa, socklen_t len)
{
	const char *dn = dir == NUSE_DIR_LISTEN ? "listen" : "connect";
	char ab[80];
	uint8_t a[16];
	uint16_t port;
	int idx, nuse;

	if (s->bindtodev) {
		debug("nuse: fd %d %s %s -> nuse (SO_BINDTODEVICE %s)", fd, dn, fmt_addr(sa, len, ab, sizeof(ab)),
		      g_dev);
		return 1;
	}
	if (!g_rules_ok || g_rules.n == 0 || addr_key(sa, len, a, &port))
		return 0;
	nuse = nuse_rules_decide(&g_rules, dir, a, port, program_invocation_short_name, &idx);
	if (idx > 0)
		debug("nuse: fd %d %s %s -> %s (rule %d: %s)", fd, dn, fmt_addr(sa, len, ab, sizeof(ab)),
		      nuse ? "nuse" : "kernel", idx, nuse_rules_why(&g_rules, idx));
	else
		debug("nuse: fd %d %s %s -> kernel (%s)", fd, dn, fmt_addr(sa, len, ab, sizeof(ab)),
		      nuse_rules_why(&g_rules, idx));
	return nuse;
}

static int nuse_setopt(struct nsock *s, int level, int name, const void *val, socklen_t len);

/* Moves s into NUSE on fd.  0: done; 1: NUSE unavailable (stay in the
 * kernel); < 0: -errno for the caller. */
static int to_nuse(struct nsock *s, int fd)
{
	struct nuse_ctl_reply rep;
	int sv[2], fl, fdfl, r, i;

	if (!session_get())
		return 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	r = ctl_request(NUSE_CTL_SOCKET, s->family, 0, 0, sv[1], &rep);
	R.close(sv[1]);
	if (r < 0) {
		static atomic_int told;

		/* Out of slots, refused, daemon gone: the program must not break,
		 * so this socket stays in the kernel, loudly (a few times). */
		R.close(sv[0]);
		if (!atomic_load(&S.dead) && atomic_fetch_add(&told, 1) < 5)
			say("nuse: fd %d: the daemon did not take the socket (%s); it stays in the kernel", fd,
			    strerror(-r));
		return 1;
	}
	fl = R.fcntl(fd, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK))
		R.fcntl(sv[0], F_SETFL, O_NONBLOCK | O_RDWR);
	/* The app's fd number now names our end; the kernel socket closes. */
	pthread_mutex_lock(&g_tablock);
	fdfl = R.fcntl(fd, F_GETFD);
	R.dup3(sv[0], fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	/* dup'd before the decision: every copy must name our end too */
	for (i = 0; atomic_load(&s->refs) > 1 && i < g_tabhi; i++) {
		if (i == fd || atomic_load_explicit(&g_tab[i], memory_order_relaxed) != s)
			continue;
		fdfl = R.fcntl(i, F_GETFD);
		R.dup3(sv[0], i, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	}
	attach_slot(s, rep.sock, rep.gen);
	pthread_mutex_unlock(&g_tablock);
	R.close(sv[0]);
	for (i = 0; i < s->nopts; i++)
		nuse_setopt(s, s->opts[i].level, s->opts[i].name, s->opts[i].val, s->opts[i].len);
	s->nopts = 0;
	return 0;
}

/* ---- control calls on NUSE sockets ----------------------------------- */

static int nuse_bind(struct nsock *s, const struct sockaddr *sa, socklen_t len)
{
	struct cmd_io io = {.addr = sa, .addrlen = len};

	if (len > NUSE_ADDR_LEN)
		return -EINVAL;
	return cmd_call(s, NUSE_OP_BIND, &io);
}

static int nuse_listen(struct nsock *s, int backlog)
{
	struct cmd_io io = {.arg0 = (uint32_t)backlog};
	int r = cmd_call(s, NUSE_OP_LISTEN, &io);

	if (r == 0)
		s->listening = 1;
	return r;
}

static int nuse_connect(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len)
{
	struct cmd_io io = {.addr = sa, .addrlen = len};
	uint32_t st = st_load(s);
	uint64_t deadline;
	int r;

	if (len > NUSE_ADDR_LEN)
		return -EINVAL;
	if (s->dead || atomic_load(&S.dead))
		return -ECONNREFUSED;
	if (s->connecting) {
		/* connect() again after EINPROGRESS: the kernel's answers */
		if (st & NUSE_SS_CONNECTED) {
			s->established = 1;
			s->connecting = 0;
			return 0;
		}
		if (st & (NUSE_SS_ERROR | NUSE_SS_RESET)) {
			s->connecting = 0;
			r = take_so_error(s);
			return -(r ? r : ECONNREFUSED);
		}
		if (s->nonblock)
			return -EALREADY;
	} else {
		if (is_connected(s, st))
			return -EISCONN;
		r = cmd_call(s, NUSE_OP_CONNECT, &io);
		if (r == 0)
			s->established = 1;
		if (r != -EINPROGRESS)
			return r;
		s->connecting = 1;
		fill(s, fd);
		if (s->nonblock)
			return -EINPROGRESS;
	}
	deadline = deadline_of(s->sndtimeo_ms);
	for (;;) {
		st = st_load(s);
		if (st & NUSE_SS_CONNECTED) {
			s->connecting = 0;
			s->established = 1;
			return 0;
		}
		if (st & (NUSE_SS_ERROR | NUSE_SS_RESET)) {
			s->connecting = 0;
			r = take_so_error(s);
			return -(r ? r : ECONNREFUSED);
		}
		r = wait_fd(s, fd, POLLOUT, conn_ready, deadline);
		if (r == -EPIPE) {
			s->connecting = 0;
			return -ECONNREFUSED;
		}
		if (r == -ETIMEDOUT)
			return -EINPROGRESS;
		if (r == -EINTR)
			return -EINTR;
		if (!conn_ready(s)) { /* POLLOUT without news: don't spin on it */
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
	}
}

/* SO_* options the shim answers or keeps itself; 1 if handled. */
static int local_setopt(struct nsock *s, int level, int name, const void *val, socklen_t len, int *ret)
{
	if (level != SOL_SOCKET)
		return 0;
	if (name == SO_RCVTIMEO || name == SO_SNDTIMEO) {
		const struct timeval *tv = val;
		int64_t ms;

		if (len < sizeof(struct timeval)) {
			*ret = -EINVAL;
			return 1;
		}
		ms = (int64_t)tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000;
		if (name == SO_RCVTIMEO)
			s->rcvtimeo_ms = ms;
		else
			s->sndtimeo_ms = ms;
		*ret = 0;
		return 1;
	}
	if (name == SO_BINDTODEVICE) {
		*ret = 0;
		return 1;
	}
	return 0;
}

static int nuse_setopt(struct nsock *s, int level, int name, const void *val, socklen_t len)
{
	struct cmd_io io = {.arg0 = (uint32_t)level, .arg1 = (uint32_t)name, .opt = val, .optlen = len};
	int r;

	if (local_setopt(s, level, name, val, len, &r))
		return r;
	if (len > NUSE_OPT_LEN)
		return -EINVAL;
	r = cmd_call(s, NUSE_OP_SETSOCKOPT, &io);
	if (r == -ENOPROTOOPT &&
	    (level == SOL_SOCKET || level == IPPROTO_IP || level == IPPROTO_IPV6 || level == IPPROTO_TCP)) {
		/* A real option the daemon does not carry (IP_TOS, SO_PRIORITY,
		 * ...): Linux would take it, so the program must not fail. */
		debug("nuse: setsockopt(%d, %d) not carried by the daemon; ignored", level, name);
		r = 0;
	}
	return r;
}

/* ---- the interposers ------------------------------------------------ */

EXPORT int socket(int domain, int type, int protocol)
{
	int fd, base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct nsock *s;

	REAL(socket);
	fd = R.socket(domain, type, protocol);
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
	int r;

	REAL(bind);
	s = fd_get(fd);
	if (likely(!s) || !sa)
		return R.bind(fd, sa, len);
	pthread_mutex_lock(&s->lock);
	if (s->kind == K_NUSE) {
		r = ret_err(nuse_bind(s, sa, len));
		goto out;
	}
	if (s->kind != K_UNDECIDED || sa->sa_family != s->family || len > sizeof(s->bind_addr) || s->bound) {
		r = R.bind(fd, sa, len);
		goto out;
	}
	if (is_wildcard_port0(sa, len) && !s->bindtodev) {
		/* Nothing to decide yet: listen or connect will. */
		memcpy(&s->bind_addr, sa, len);
		s->bind_len = len;
		s->bound = B_DEFERRED;
		r = 0;
		goto out;
	}
	if (decide(s, fd, NUSE_DIR_LISTEN, sa, len)) {
		r = to_nuse(s, fd);
		if (r == 0) {
			r = ret_err(nuse_bind(s, sa, len));
			goto out;
		}
		if (r < 0) {
			r = ret_err(r);
			goto out;
		}
	}
	r = R.bind(fd, sa, len);
	if (r == 0) {
		memcpy(&s->bind_addr, sa, len);
		s->bind_len = len;
		s->bound = B_KERNEL;
	}
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

EXPORT int listen(int fd, int backlog)
{
	struct nsock *s;
	struct sockaddr_storage any;
	socklen_t alen;
	int r;

	REAL(listen);
	s = fd_get(fd);
	if (likely(!s))
		return R.listen(fd, backlog);
	pthread_mutex_lock(&s->lock);
	if (s->kind == K_NUSE) {
		r = ret_err(nuse_listen(s, backlog));
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	if (s->kind == K_UNDECIDED && s->bound != B_KERNEL) {
		if (s->bound == B_DEFERRED) {
			memcpy(&any, &s->bind_addr, s->bind_len);
			alen = s->bind_len;
		} else {
			memset(&any, 0, sizeof(any));
			any.ss_family = (sa_family_t)s->family;
			alen = s->family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
		}
		if (decide(s, fd, NUSE_DIR_LISTEN, (struct sockaddr *)&any, alen)) {
			r = to_nuse(s, fd);
			if (r == 0) {
				/* the daemon's stack may not autobind on listen */
				r = nuse_bind(s, (struct sockaddr *)&any, alen);
				if (r == 0)
					r = nuse_listen(s, backlog);
				pthread_mutex_unlock(&s->lock);
				return ret_err(r);
			}
			if (r < 0) {
				pthread_mutex_unlock(&s->lock);
				return ret_err(r);
			}
		}
		if (s->bound == B_DEFERRED && R.bind(fd, (struct sockaddr *)&any, alen) < 0) {
			pthread_mutex_unlock(&s->lock);
			return -1;
		}
	}
	pthread_mutex_unlock(&s->lock);
	to_kernel(s, fd);
	return R.listen(fd, backlog);
}

EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;
	int r;

	REAL(connect);
	s = fd_get(fd);
	if (likely(!s) || !sa)
		return R.connect(fd, sa, len);
	pthread_mutex_lock(&s->lock);
	if (s->kind == K_NUSE) {
		r = ret_err(nuse_connect(s, fd, sa, len));
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	if (s->kind == K_UNDECIDED && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
	    decide(s, fd, NUSE_DIR_CONNECT, sa, len)) {
		r = to_nuse(s, fd);
		if (r == 0) {
			if (s->bound)
				r = nuse_bind(s, (struct sockaddr *)&s->bind_addr, s->bind_len);
			if (r == 0)
				r = nuse_connect(s, fd, sa, len);
			pthread_mutex_unlock(&s->lock);
			return ret_err(r);
		}
		if (r < 0) {
			pthread_mutex_unlock(&s->lock);
			return ret_err(r);
		}
	}
	if (s->kind == K_UNDECIDED && s->bound == B_DEFERRED &&
	    R.bind(fd, (struct sockaddr *)&s->bind_addr, s->bind_len) < 0) {
		pthread_mutex_unlock(&s->lock);
		return -1;
	}
	pthread_mutex_unlock(&s->lock);
	to_kernel(s, fd);
	return R.connect(fd, sa, len);
}

/*
 * A dead listener's fd (the app end of a socketpair whose daemon end is
 * gone) polls readable forever, so an event loop would spin on accept()
 * errors.  Put a never-ready socket (unconnected AF_UNIX) in its place: the
 * fd number stays valid, epoll drops the old file, the program idles.
 */
static void quiet_listener(struct nsock *s, int fd)
{
	int q, fl, e = errno;

	if (s->quiet)
		return;
	s->quiet = 1;
	q = R.socket(AF_UNIX, SOCK_STREAM, 0);
	if (q < 0)
		return;
	fl = R.fcntl(fd, F_GETFD);
	if (q != fd)
		R.dup3(q, fd, fl >= 0 && (fl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	R.close(q);
	say("nuse: fd %d: listening socket lost with the daemon; it accepts nothing more", fd);
	errno = e;
}

static int nuse_accept(struct nsock *s, int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	int nonblock = s->nonblock;
	uint64_t deadline = nonblock ? 0 : deadline_of(s->rcvtimeo_ms);
	struct nuse_ctl_reply rep;
	struct nsock *c;
	int sv[2], r;

	if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
		return (int)fail(EINVAL);
	for (;;) {
		uint32_t st = st_load(s);

		/* A reset listener is one the daemon let go of (it shut down or
		 * ended the session): it will never accept again. */
		if (st & (NUSE_SS_RESET | NUSE_SS_WR_DEAD))
			s->dead = 1;
		if (s->dead || atomic_load(&S.dead)) {
			quiet_listener(s, fd);
			return (int)fail(ECONNABORTED);
		}
		if (!(st & NUSE_SS_LISTENING) && !s->listening)
			return (int)fail(EINVAL);
		if (st & NUSE_SS_ACCEPTQ) {
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
				return -1;
			r = ctl_request(NUSE_CTL_ACCEPT, s->family, s->slot, s->gen, sv[1], &rep);
			R.close(sv[1]);
			if (r >= 0)
				break;
			R.close(sv[0]);
			if (r != -EAGAIN)
				return (int)fail(r == -ECONNRESET ? ECONNABORTED : -r);
			/* Someone else took it (another thread or a forked sibling)
			 * and ACCEPTQ is not yet updated: don't hammer the daemon. */
			if (nonblock)
				return (int)fail(EAGAIN);
			{
				struct timespec ts = {0, 200000};
				nanosleep(&ts, NULL);
			}
			continue;
		}
		unsignal(s, fd);
		if (readable(s))
			continue;
		if (nonblock)
			return (int)fail(hung_up(s, fd) ? ECONNABORTED : EAGAIN);
		r = wait_fd(s, fd, POLLIN, rx_ready, deadline);
		if (r < 0)
			return (int)fail(r == -EPIPE ? ECONNABORTED : r == -ETIMEDOUT ? EAGAIN : -r);
	}
	if (!(flags & SOCK_CLOEXEC))
		R.fcntl(sv[0], F_SETFD, 0);
	if (flags & SOCK_NONBLOCK)
		R.fcntl(sv[0], F_SETFL, O_RDWR | O_NONBLOCK);
	if (!readable(s))
		unsignal(s, fd);
	c = nsock_new(s->family);
	if (!c || sv[0] >= g_tabmax) {
		R.close(sv[0]);
		return (int)fail(ENOMEM);
	}
	c->nonblock = !!(flags & SOCK_NONBLOCK);
	attach_slot(c, rep.sock, rep.gen);
	c->established = 1;
	pthread_mutex_lock(&g_tablock);
	tab_put_locked(sv[0], c);
	pthread_mutex_unlock(&g_tablock);
	if (sa && len) {
		socklen_t l = rep.addrlen > NUSE_ADDR_LEN ? NUSE_ADDR_LEN : rep.addrlen;

		memcpy(sa, rep.addr, l < *len ? l : *len);
		*len = l;
	}
	if (g_debug) {
		char ab[80];
		debug("nuse: fd %d accept -> fd %d from %s (slot %u)", fd, sv[0],
		      fmt_addr((struct sockaddr *)rep.addr, rep.addrlen, ab, sizeof(ab)), rep.sock);
	}
	return sv[0];
}

EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	struct nsock *s;

	REAL(accept4);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.accept4(fd, sa, len, flags);
	return nuse_accept(s, fd, sa, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(accept);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.accept(fd, sa, len);
	return nuse_accept(s, fd, sa, len, 0);
}

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
	if (likely(!s))
		return R.recvmsg(fd, m, flags);
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

/* Drops fd's reference; the last one closes the NUSE socket. */
static void drop_fd(int fd)
{
	struct nsock *s;
	int last;

	pthread_mutex_lock(&g_tablock);
	s = fd_get(fd);
	if (!s) {
		pthread_mutex_unlock(&g_tablock);
		return;
	}
	atomic_store(&g_tab[fd], NULL);
	last = atomic_fetch_sub(&s->refs, 1) == 1;
	pthread_mutex_unlock(&g_tablock);
	if (!last)
		return;
	if (s->kind == K_NUSE) {
		int lastproc = procs_release(s);

		debug("nuse: fd %d close (slot %u): %s", fd, s->slot,
		      lastproc ? "last holder, CLOSE" : "still held by another process");
		if (lastproc && !s->dead && !atomic_load(&S.dead))
			cmd_call(s, NUSE_OP_CLOSE, NULL);
	}
	pthread_mutex_lock(&g_tablock);
	nsock_free_locked(s);
	pthread_mutex_unlock(&g_tablock);
}

EXPORT int close(int fd)
{
	REAL(close);
	if (unlikely(fd_get(fd) != NULL) && !in_vfork_child())
		drop_fd(fd);
	else if (unlikely(fd == S.ctl && fd >= 0)) {
		/* closefrom()-style sweeps must not take our session with them */
		return 0;
	}
	return R.close(fd);
}

EXPORT int shutdown(int fd, int how)
{
	struct nsock *s;
	struct cmd_io io = {.arg0 = (uint32_t)how};
	int r;

	REAL(shutdown);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.shutdown(fd, how);
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return (int)fail(EINVAL);
	if (!(st_load(s) & (NUSE_SS_CONNECTED | NUSE_SS_CONNECTING | NUSE_SS_LISTENING)) && !s->established &&
	    !s->connecting && !s->listening)
		return (int)fail(ENOTCONN);
	r = cmd_call(s, NUSE_OP_SHUTDOWN, &io);
	if (r < 0)
		return ret_err(r);
	if (how != SHUT_RD)
		s->shut_wr = 1;
	if (how != SHUT_WR)
		s->shut_rd = 1;
	return 0;
}

static int nuse_name(struct nsock *s, uint16_t op, struct sockaddr *sa, socklen_t *len)
{
	uint8_t buf[NUSE_ADDR_LEN];
	struct cmd_io io = {.addr_out = buf, .addr_out_len = sizeof(buf)};
	int r;

	if (!sa || !len)
		return (int)fail(EFAULT);
	r = cmd_call(s, op, &io);
	if (r < 0)
		return ret_err(r);
	memcpy(sa, buf, io.addr_out_len < *len ? io.addr_out_len : *len);
	*len = io.addr_out_len;
	return 0;
}

EXPORT int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(getsockname);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.getsockname(fd, sa, len);
	return nuse_name(s, NUSE_OP_GETSOCKNAME, sa, len);
}

EXPORT int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(getpeername);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.getpeername(fd, sa, len);
	return nuse_name(s, NUSE_OP_GETPEERNAME, sa, len);
}

static int is_nuse_dev(const void *val, socklen_t len)
{
	size_t n = strnlen(val, len);

	return n == strlen(g_dev) && !memcmp(val, g_dev, n);
}

EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct nsock *s;
	int r, i;

	REAL(setsockopt);
	s = fd_get(fd);
	if (likely(!s))
		return R.setsockopt(fd, level, name, val, len);
	if (s->kind == K_NUSE)
		return ret_err(nuse_setopt(s, level, name, val, len));
	pthread_mutex_lock(&s->lock);
	if (s->kind != K_UNDECIDED) {
		pthread_mutex_unlock(&s->lock);
		return R.setsockopt(fd, level, name, val, len);
	}
	if (level == SOL_SOCKET && name == SO_BINDTODEVICE && val) {
		if (is_nuse_dev(val, len)) {
			/* the NUSE device need not exist in the kernel */
			s->bindtodev = 1;
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
		s->bindtodev = 0;
	}
	r = R.setsockopt(fd, level, name, val, len);
	if (r == 0 && val && len <= NUSE_OPT_LEN && !(level == SOL_SOCKET && name == SO_BINDTODEVICE)) {
		/* recorded for replay in NUSE; the latest value of an option wins */
		for (i = 0; i < s->nopts; i++)
			if (s->opts[i].level == level && s->opts[i].name == name)
				break;
		if (i < MAX_OPTS) {
			s->opts[i].level = level;
			s->opts[i].name = name;
			s->opts[i].len = len;
			memcpy(s->opts[i].val, val, len);
			if (i == s->nopts)
				s->nopts++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int put_int(void *val, socklen_t *len, int v)
{
	if (!val || !len)
		return (int)fail(EFAULT);
	if (*len >= sizeof(int)) {
		memcpy(val, &v, sizeof(int));
		*len = sizeof(int);
	} else {
		memcpy(val, &v, *len); /* Linux copies what fits */
	}
	return 0;
}

EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct nsock *s;
	struct cmd_io io = {0};
	int r;

	REAL(getsockopt);
	s = fd_get(fd);
	if (likely(!s) || s->kind != K_NUSE) {
		if (s && level == SOL_SOCKET && name == SO_BINDTODEVICE && s->bindtodev && val && len) {
			size_t n = strlen(g_dev) + 1;

			memcpy(val, g_dev, n < *len ? n : *len);
			*len = (socklen_t)n;
			return 0;
		}
		return R.getsockopt(fd, level, name, val, len);
	}
	if (!len || !val)
		return (int)fail(EFAULT);
	if (level == SOL_SOCKET) {
		switch (name) {
		case SO_TYPE:
			return put_int(val, len, SOCK_STREAM);
		case SO_DOMAIN:
			return put_int(val, len, s->family);
		case SO_PROTOCOL:
			return put_int(val, len, IPPROTO_TCP);
		case SO_ACCEPTCONN:
			return put_int(val, len, !!(st_load(s) & NUSE_SS_LISTENING) || s->listening);
		case SO_RCVTIMEO:
		case SO_SNDTIMEO: {
			int64_t ms = name == SO_RCVTIMEO ? s->rcvtimeo_ms : s->sndtimeo_ms;
			struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

			if (*len < sizeof(tv))
				return (int)fail(EINVAL);
			memcpy(val, &tv, sizeof(tv));
			*len = sizeof(tv);
			return 0;
		}
		case SO_BINDTODEVICE: {
			size_t n = strlen(g_dev) + 1;

			memcpy(val, g_dev, n < *len ? n : *len);
			*len = (socklen_t)n;
			return 0;
		}
		}
	}
	io.arg0 = (uint32_t)level;
	io.arg1 = (uint32_t)name;
	if (level == IPPROTO_TCP && name == TCP_INFO) {
		/* Too big for a command slot: the daemon writes it into the
		 * socket's info area and answers with its length. */
		size_t n;

		r = cmd_call(s, NUSE_OP_GETSOCKOPT, &io);
		if (r < 0)
			return ret_err(r);
		n = (size_t)r < NUSE_INFO_LEN ? (size_t)r : NUSE_INFO_LEN;
		if (n > *len)
			n = *len;
		memcpy(val, s->sh->info, n);
		*len = (socklen_t)n;
		return 0;
	}
	io.opt_out = val;
	io.opt_out_len = *len;
	r = cmd_call(s, NUSE_OP_GETSOCKOPT, &io);
	if (r < 0)
		return ret_err(r);
	*len = io.opt_out_len;
	return 0;
}

static int nuse_fcntl(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
	struct nsock *s = fd_get(fd);
	int r;

	if (likely(!s))
		return real(fd, cmd, arg);
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		r = real(fd, cmd, arg);
		if (r >= 0)
			dup_track(fd, r);
		return r;
	case F_SETFL:
		r = real(fd, cmd, arg);
		if (r == 0)
			s->nonblock = !!((long)arg & O_NONBLOCK);
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
	if (s->kind == K_NUSE && (req == FIONREAD || req == TIOCOUTQ)) {
		uint64_t used;

		if (!arg)
			return (int)fail(EFAULT);
		used = data_queued(s, req == FIONREAD);
		*(int *)arg = used > INT_MAX ? INT_MAX : (int)used;
		return 0;
	}
	return R.ioctl(fd, req, arg);
}

EXPORT int dup(int fd)
{
	int r;

	REAL(dup);
	r = R.dup(fd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

EXPORT int dup2(int fd, int nfd)
{
	int r;

	REAL(dup2);
	if (fd != nfd && unlikely(fd_get(nfd) != NULL) && R.fcntl(fd, F_GETFD) >= 0 && !in_vfork_child())
		drop_fd(nfd);
	r = R.dup2(fd, nfd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

EXPORT int dup3(int fd, int nfd, int flags)
{
	int r;

	REAL(dup3);
	if (fd != nfd && unlikely(fd_get(nfd) != NULL) && R.fcntl(fd, F_GETFD) >= 0 && !in_vfork_child())
		drop_fd(nfd);
	r = R.dup3(fd, nfd, flags);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

/*
 * close_range()/closefrom(): sweeps by daemons and by children before exec.
 * Tracked sockets in the range are let go of as by close(), and the control
 * socket is kept out of the sweep.
 */
EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	unsigned i, hi;
	int r;

	REAL(close_range);
	if (!(flags & CLOSE_RANGE_CLOEXEC) && first < (unsigned)g_tabhi && !in_vfork_child()) {
		hi = last < (unsigned)g_tabhi - 1 ? last : (unsigned)g_tabhi - 1;
		for (i = first; i <= hi; i++)
			if (fd_get((int)i))
				drop_fd((int)i);
	}
	if (S.ctl >= 0 && (unsigned)S.ctl >= first && (unsigned)S.ctl <= last) {
		r = 0;
		if ((unsigned)S.ctl > first)
			r = R.close_range(first, (unsigned)S.ctl - 1, flags);
		if (r == 0 && (unsigned)S.ctl < last)
			r = R.close_range((unsigned)S.ctl + 1, last, flags);
		return r;
	}
	return R.close_range(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
	if (lowfd < 0)
		lowfd = 0;
	close_range((unsigned)lowfd, ~0u, 0);
}

/* ---- exec and exit: letting go of sockets shared with other processes -- */

extern char **environ;

static void exec_drop(struct nsock *s)
{
	unsigned v = atomic_load(&g_sh->procs[s->slot]);

	/* Another process holds it too: after exec we don't.  (The last holder
	 * keeps its count: if exec fails it still has the socket.) */
	s->exec_dropped = 0;
	while (v > 1) {
		if (atomic_compare_exchange_weak(&g_sh->procs[s->slot], &v, v - 1)) {
			s->exec_dropped = 1;
			break;
		}
	}
}

static void exec_restore(struct nsock *s)
{
	if (s->exec_dropped)
		atomic_fetch_add(&g_sh->procs[s->slot], 1);
	s->exec_dropped = 0;
}

static int exec_prepare(void)
{
	/* A vfork child shares our memory and runs no atfork handler: it was
	 * never counted, so its exec must not uncount the parent. */
	if (S.state != SESS_UP || !g_sh || getpid() != g_mypid)
		return 0;
	pthread_mutex_lock(&g_tablock);
	each_nuse_locked(exec_drop);
	pthread_mutex_unlock(&g_tablock);
	return 1;
}

static void exec_failed(int prepared)
{
	int e = errno;

	if (!prepared)
		return;
	pthread_mutex_lock(&g_tablock);
	each_nuse_locked(exec_restore);
	pthread_mutex_unlock(&g_tablock);
	errno = e;
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	int p, r;

	REAL(execve);
	p = exec_prepare();
	r = R.execve(path, argv, envp);
	exec_failed(p);
	return r;
}

EXPORT int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	int p, r;

	REAL(execvpe);
	p = exec_prepare();
	r = R.execvpe(file, argv, envp);
	exec_failed(p);
	return r;
}

EXPORT int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	int p, r;

	REAL(fexecve);
	p = exec_prepare();
	r = R.fexecve(fd, argv, envp);
	exec_failed(p);
	return r;
}

#define EXEC_MAX_ARGS 65536

/*
 * execl*(): glibc's versions call execve internally, past our interposer.
 * The argument vector lives on the stack, sized by a first pass (no static
 * TLS: every thread of the program would carry it).
 */
static int count_args(const char *arg, va_list ap)
{
	va_list aq;
	int n = 1;

	va_copy(aq, ap);
	while (arg && n <= EXEC_MAX_ARGS) {
		arg = va_arg(aq, const char *);
		n++;
	}
	va_end(aq);
	return n; /* including the terminating NULL */
}

static void fill_args(const char *arg, va_list ap, char **argv, int n, char ***envp)
{
	int i = 0;

	argv[i++] = (char *)arg;
	while (arg && i < n) {
		arg = va_arg(ap, const char *);
		argv[i++] = (char *)arg;
	}
	argv[n - 1] = NULL;
	if (envp)
		*envp = va_arg(ap, char **);
}

#define EXECL_BODY(call, want_envp)                                 \
	va_list ap;                                                 \
	char **envp = environ;                                      \
	int n;                                                      \
                                                                    \
	va_start(ap, arg);                                          \
	n = count_args(arg, ap);                                    \
	if (n > EXEC_MAX_ARGS) {                                    \
		va_end(ap);                                         \
		errno = E2BIG;                                      \
		return -1;                                          \
	}                                                           \
	{                                                           \
		char *argv[n];                                      \
                                                                    \
		fill_args(arg, ap, argv, n, want_envp ? &envp : NULL); \
		va_end(ap);                                         \
		return call;                                        \
	}

EXPORT int execl(const char *path, const char *arg, ...)
{
	EXECL_BODY(execve(path, argv, envp), 0)
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	EXECL_BODY(execve(path, argv, envp), 1)
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	EXECL_BODY(execvpe(file, argv, envp), 0)
}

static void exit_release(struct nsock *s)
{
	if (procs_release(s) && !s->dead && !atomic_load(&S.dead))
		cmd_call(s, NUSE_OP_CLOSE, NULL);
}

/*
 * A forked child that exits (through exit(), not _exit()) lets go of the
 * sockets it still holds, so that the last holder's exit closes them.  The
 * session's own process needs nothing: the daemon closes its sockets when
 * the session ends.
 */
__attribute__((destructor)) static void nuse_fini(void)
{
	if (S.state != SESS_UP || !g_sh || getpid() == S.pid)
		return;
	pthread_mutex_lock(&g_tablock);
	each_nuse_locked(exit_release);
	pthread_mutex_unlock(&g_tablock);
}

/* ---- setup ------------------------------------------------------------ */

static void load_rules(void)
{
	static char text[65536];
	const char *env = getenv("NUSE_RULES"), *file = getenv("NUSE_RULES_FILE");
	char err[256];
	size_t n = 0;

	if (env) {
		n = strlen(env) < sizeof(text) - 2 ? strlen(env) : sizeof(text) - 2;
		memcpy(text, env, n);
		text[n++] = '\n';
	}
	if (file && *file) {
		int fd = open(file, O_RDONLY | O_CLOEXEC);
		ssize_t r = 0;

		if (fd < 0) {
			say("nuse: cannot read NUSE_RULES_FILE %s (%s); NUSE sockets stay in the kernel", file,
			    strerror(errno));
			return;
		}
		while (n < sizeof(text) - 1 && (r = R.read(fd, text + n, sizeof(text) - 1 - n)) > 0)
			n += (size_t)r;
		R.close(fd);
		if (n >= sizeof(text) - 1) {
			say("nuse: NUSE_RULES_FILE %s is too long; NUSE sockets stay in the kernel", file);
			return;
		}
	}
	text[n] = 0;
	if (nuse_rules_parse(text, &g_rules, err, sizeof(err)) < 0) {
		say("nuse: rules: %s; NUSE sockets stay in the kernel", err);
		return;
	}
	g_rules_ok = 1;
}

static void procs_inc(struct nsock *s)
{
	atomic_fetch_add(&g_sh->procs[s->slot], 1);
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&S.lock);
	pthread_mutex_lock(&g_tablock);
	/* the child will hold every socket we hold (if fork fails, a socket
	 * outlives its last close until the session ends: harmless) */
	if (g_sh)
		each_nuse_locked(procs_inc);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&g_tablock);
	pthread_mutex_unlock(&S.lock);
}

/*
 * In the child only this thread exists: the locks other threads held are
 * re-created (not the process-shared ctl_lock: its state is shared and its
 * holder, if any, is alive in the parent).  The child shares the parent's
 * session: its arena, its control socket and its sockets.
 */
static void atfork_child(void)
{
	int i;

	g_mypid = getpid();
	pthread_mutex_init(&g_tablock, NULL);
	pthread_mutex_init(&S.lock, NULL);
	for (i = 0; i < g_tabhi; i++) {
		struct nsock *s = atomic_load_explicit(&g_tab[i], memory_order_relaxed);

		if (s) {
			pthread_mutex_init(&s->lock, NULL);
			pthread_mutex_init(&s->rx_lock, NULL);
			pthread_mutex_init(&s->tx_lock, NULL);
		}
	}
}

__attribute__((constructor)) static void nuse_init(void)
{
	struct rlimit rl;
	const char *e;
	size_t max = 65536;
	void *p;

	resolve();
	g_mypid = getpid();
	e = getenv("NUSE_DEBUG");
	g_debug = e && *e && strcmp(e, "0");
	e = getenv("NUSE_SOCK");
	if (e && *e)
		g_sock_path = e;
	e = getenv("NUSE_DEV");
	if (e && *e && strlen(e) < sizeof(g_dev))
		strcpy(g_dev, e);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max > max)
		max = rl.rlim_max;
	if (max > (1u << 20))
		max = 1u << 20;
	p = mmap(NULL, max * sizeof(*g_tab), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		 0);
	if (p == MAP_FAILED) {
		say("nuse: cannot allocate the fd table; everything stays in the kernel");
		return;
	}
	g_tab = p;
	load_rules();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	g_tabmax = (int)max; /* last: from here on sockets are tracked */
}
