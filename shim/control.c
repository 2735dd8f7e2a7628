/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control.c - the control calls of a NUSE socket (control.h): bind,
 * listen, connect, accept, shutdown, close and names, as commands
 * in the arena's slots (cmd.h) or, for accept, a NUSE_CTL_ACCEPT on the
 * control socket (session.h).  It calls the command slots, the session,
 * the socket's shared state (sockstate.h: waits, fill, unsignal), the fd
 * table, the process counts (procs.h, at close) and the base.
 */
#include "control.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "epcarry.h"
#include "procs.h"
#include "direct.h"
#include "sockstate.h"
#include "spare.h"

int nuse_bind(struct nsock *s, const struct sockaddr *sa, socklen_t len)
{
	struct cmd_io io = {.addr = sa, .addrlen = len};

	if (len > NUSE_ADDR_LEN)
		return -EINVAL;
	return cmd_call(s, NUSE_OP_BIND, &io);
}

/*
 * Puts file `end` under every fd of this process that names s (and under
 * our copy of one the program closed), keeping each fd's close-on-exec
 * flag and what the kernel keeps with the open file: O_NONBLOCK, O_ASYNC,
 * the SIGIO owner and signal, and this process's epoll registrations of
 * those fd numbers (epcarry.h).
 */
static void swap_end(struct nsock *s, int fd, int end)
{
	int old = sock_fd(s, fd), fl = R.fcntl(old, F_GETFL), sig = R.fcntl(old, F_GETSIG), i, o, fdfl;
	struct f_owner_ex owner;
	struct epcarry c;
	struct stat st;

	if (R.fcntl(old, F_GETOWN_EX, &owner) == 0 && owner.pid)
		R.fcntl(end, F_SETOWN_EX, &owner);
	if (sig > 0)
		R.fcntl(end, F_SETSIG, sig);
	if (fl >= 0)
		R.fcntl(end, F_SETFL, O_RDWR | (fl & (O_NONBLOCK | O_ASYNC)));
	epcarry_save(&c, s->ino);
	pthread_mutex_lock(&g_tablock);
	for (i = 0; i < g_tabhi; i++) {
		if (atomic_load_explicit(&g_tab[i], memory_order_relaxed) != s)
			continue;
		fdfl = R.fcntl(i, F_GETFD);
		R.dup3(end, i, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	}
	o = atomic_load(&s->orphan_fd);
	if (o >= 0)
		R.dup3(end, o, O_CLOEXEC);
	s->ino = fstat(end, &st) == 0 ? st.st_ino : 0;
	/* A registration under a number that no longer names s (the program
	 * moved the fd) stays as it was. */
	for (i = 0; i < c.n; i++)
		if (c.r[i].fd < 0 || c.r[i].fd >= g_tabhi || atomic_load(&g_tab[c.r[i].fd]) != s)
			c.r[i--] = c.r[--c.n];
	pthread_mutex_unlock(&g_tablock);
	epcarry_restore(&c);
}

/*
 * Linux's socket is closed (TCP_CLOSE, no shutdown bits) after a failed
 * connect was reported and the next connect() said ECONNABORTED, and after
 * a listener's shutdown: it polls OUT|HUP, as an unconnected AF_UNIX
 * socket does.  Ours is put in place until the socket connects or listens
 * anew (repair); the daemon hangs up the old pair itself.
 */
static void unpair(struct nsock *s, int fd)
{
	struct pollfd p = {.fd = sock_fd(s, fd), .events = 0};
	int q;

	/* Only a pair the daemon hung up: closing our end of a whole one
	 * would read to it as the program's last close. */
	if (s->unpaired || rpoll(&p, 1, 0) != 1 || !(p.revents & POLLHUP))
		return;
	q = R.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q < 0)
		return;
	swap_end(s, fd, q);
	R.close(q);
	s->unpaired = 1;
}

/*
 * The daemon hangs a pair up for good when the socket fails to connect,
 * is reset or stops listening (PROTOCOL.md "Readiness"), and a hang-up
 * cannot be undone: before the socket connects or listens anew it gets a
 * fresh pair (NUSE_CTL_REPAIR).  One poll per connect or listen tells.
 */
static int repair(struct nsock *s, int fd)
{
	struct pollfd p = {.fd = sock_fd(s, fd), .events = 0};
	struct nuse_ctl_reply rep;
	int sp[2], r;

	if (!s->unpaired && !(rpoll(&p, 1, 0) == 1 && (p.revents & POLLHUP)))
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return -errno;
	r = ctl_request(NUSE_CTL_REPAIR, s->family, s->slot, s->gen, sp[1], &rep);
	R.close(sp[1]);
	if (r < 0) {
		R.close(sp[0]);
		return r;
	}
	swap_end(s, fd, sp[0]);
	R.close(sp[0]);
	s->unpaired = 0;
	s->sig_owed = 0;
	s->sndbuf_small = 0;
	return 0;
}

int nuse_listen(struct nsock *s, int fd, int backlog)
{
	struct cmd_io io = {.arg0 = (uint32_t)backlog};
	int r = repair(s, fd);

	if (r == 0)
		r = cmd_call(s, NUSE_OP_LISTEN, &io);
	if (r == 0) {
		s->listening = 1;
		fill(s, fd); /* a listener never polls writable; the daemon leaves it so */
	}
	return r;
}


static int connect_held(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len, int *held);

int nuse_connect(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len)
{
	int held = 0, r = connect_held(s, fd, sa, len, &held);

	if (held)
		sock_unhold(s);
	return r;
}

/* connect(), holding s (*held) once it has to wait. */
static int connect_held(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len, int *held)
{
	struct cmd_io io = {.addr = sa, .addrlen = len};
	uint32_t st = st_load(s);
	uint64_t deadline;
	int r;

	if (len > NUSE_ADDR_LEN)
		return -EINVAL;
	if (s->dead || atomic_load(&S.dead))
		return -ECONNREFUSED;
	if (len >= sizeof(sa_family_t) && sa->sa_family == AF_UNSPEC) {
		/* Linux: dissolve the association; the socket may connect anew. */
		r = cmd_call(s, NUSE_OP_CONNECT, &io);
		if (r == 0) {
			s->connecting = s->established = s->listening = 0;
			s->shut_rd = s->shut_wr = s->reset_told = 0;
		}
		return r;
	}
	if (s->conn_aborted) {
		/* Linux's socket is still "connecting" after an asynchronous
		 * failure seen through SO_ERROR: the next connect() gets
		 * ECONNABORTED, and only the one after it starts anew. */
		s->conn_aborted = 0;
		unpair(s, fd);
		return -ECONNABORTED;
	}
	if (s->connecting) {
		/* connect() again after EINPROGRESS: the kernel's answers */
		if (st & NUSE_SS_CONNECTED) {
			s->established = 1;
			s->connecting = 0;
			return 0;
		}
		if (st & (NUSE_SS_ERROR | NUSE_SS_RESET)) {
			s->connecting = 0;
			r = take_so_error(s, fd);
			return -(r ? r : ECONNREFUSED);
		}
		if (s->nonblock)
			return -EALREADY;
	} else {
		if (is_connected(s, st))
			return -EISCONN;
		r = repair(s, fd);
		if (r < 0)
			return r;
		r = cmd_call(s, NUSE_OP_CONNECT, &io);
		s->reset_told = 0;
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
			r = take_so_error(s, fd);
			return -(r ? r : ECONNREFUSED);
		}
		if (!*held && !(*held = sock_hold(s, fd)))
			return -EBADF;
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

static int accept_held(struct nsock *s, int fd, struct sockaddr *sa, socklen_t *len, int flags, int *held);

int nuse_accept(struct nsock *s, int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	int held = 0, r = accept_held(s, fd, sa, len, flags, &held);

	if (held)
		sock_unhold(s);
	return r;
}

/*
 * ACCEPT on a spare pair (spare.h), as NUSE_OP_ACCEPT: 0 with *fd the new
 * socket's fd (the lowest free number, as accept gives; close-on-exec as
 * flags say) and the slot and peer in rep; -errno from the daemon (the
 * spare went back to the pool); 1 when there is no spare to use.
 */
static int accept_on_spare(struct nsock *s, int flags, int *fd, struct nuse_ctl_reply *rep)
{
	struct nuse_op_born b;
	struct cmd_io io;
	int r;

	memset(&io, 0, sizeof(io));
	io.opt_out = &b;
	io.opt_out_len = sizeof(b);
	io.addr_out = rep->addr;
	io.addr_out_len = sizeof(rep->addr);
	r = spare_call(s, NUSE_OP_ACCEPT, &io, &b, &io.opt_out_len, (flags & SOCK_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD,
		       fd);
	if (r != 0)
		return r;
	rep->sock = b.sock;
	rep->gen = b.gen;
	rep->addrlen = io.addr_out_len;
	return 0;
}

/* accept(), holding s (*held) once it has to wait. */
static int accept_held(struct nsock *s, int fd, struct sockaddr *sa, socklen_t *len, int flags, int *held)
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
			if (sock_fd(s, fd) == fd) /* the fd number is still the program's socket */
				quiet_listener(s, fd);
			return (int)fail(ECONNABORTED);
		}
		if (!(st & NUSE_SS_LISTENING) && !s->listening)
			return (int)fail(EINVAL);
		if (st & NUSE_SS_ACCEPTQ) {
			r = accept_on_spare(s, flags, &sv[0], &rep);
			if (r == 1) {
				if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
					return -1;
				r = ctl_request(NUSE_CTL_ACCEPT, s->family, s->slot, s->gen, sv[1], &rep);
				R.close(sv[1]);
				if (r < 0)
					R.close(sv[0]);
			}
			if (r >= 0)
				break;
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
		take_stray(s, fd);
		if (nonblock)
			return (int)fail(hung_up(s, fd) ? ECONNABORTED : EAGAIN);
		if (!*held && !(*held = sock_hold(s, fd)))
			return (int)fail(EBADF);
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
	else
		unsignal_extra(s, fd);
	c = nsock_new(s->family);
	if (!c || sv[0] >= g_tabmax) {
		R.close(sv[0]);
		return (int)fail(ENOMEM);
	}
	c->nonblock = !!(flags & SOCK_NONBLOCK);
	attach_slot(c, rep.sock, rep.gen, sv[0]);
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

/* The socket's last fd is gone and nobody is blocked on it: let it go. */
static void release_sock(struct nsock *s, int fd)
{
	/* A slot that is no longer this socket's (its generation moved on)
	 * is not ours to count down or CLOSE. */
	if (s->kind == K_NUSE && atomic_load(A32(&s->sh->gen)) == s->gen) {
		int lastproc = procs_release(s);

		debug("nuse: fd %d close (slot %u): %s", fd, s->slot,
		      lastproc ? "last holder, CLOSE" : "still held by another process");
		/* Not waited for: close() returns at once, as Linux's does
		 * (the daemon lingers to send what the ring holds). */
		if (lastproc && !s->dead && !atomic_load(&S.dead))
			cmd_post_async(s, NUSE_OP_CLOSE);
	}
	direct_release(s);
	pthread_mutex_lock(&g_tablock);
	nsock_free_locked(s);
	pthread_mutex_unlock(&g_tablock);
}

/* A number for the shim's copy of a closed fd, out of the program's way:
 * from the top of the fd limit, since programs expect the lowest free
 * numbers for themselves. */
static int orphan_min(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 256 && rl.rlim_cur != RLIM_INFINITY)
		return (int)(rl.rlim_cur - 128);
	return 3;
}

void drop_fd(int fd)
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
	if (last && atomic_load(&s->busy) > 0) {
		/* A thread blocks on it: it keeps the socket (our copy of the fd
		 * for its waits), and its sock_unhold closes it. */
		int o = R.fcntl(fd, F_DUPFD_CLOEXEC, orphan_min());

		if (o < 0)
			o = R.fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (o >= 0) {
			atomic_store(&s->orphan_fd, o);
			debug("nuse: fd %d closed while a thread blocks on it (slot %u); it closes when that call returns",
			      fd, s->slot);
			pthread_mutex_unlock(&g_tablock);
			return;
		}
	}
	pthread_mutex_unlock(&g_tablock);
	if (last)
		release_sock(s, fd);
}

int sock_hold(struct nsock *s, int fd)
{
	atomic_fetch_add(&s->busy, 1);
	/* Dekker with drop_fd: it clears the entry, then reads busy. */
	if (atomic_load(&g_tab[fd]) == s || atomic_load(&s->orphan_fd) >= 0)
		return 1;
	sock_unhold(s);
	return 0;
}

void sock_unhold(struct nsock *s)
{
	int o;

	if (atomic_fetch_sub(&s->busy, 1) != 1)
		return;
	pthread_mutex_lock(&g_tablock);
	o = atomic_load(&s->orphan_fd);
	if (o >= 0 && atomic_load(&s->busy) == 0) {
		atomic_store(&s->orphan_fd, -1);
		pthread_mutex_unlock(&g_tablock);
		release_sock(s, o);
		R.close(o);
		return;
	}
	pthread_mutex_unlock(&g_tablock);
}

int nuse_shutdown(struct nsock *s, int fd, int how)
{
	struct cmd_io io = {.arg0 = (uint32_t)how};
	int r;

	if (!(st_load(s) & (NUSE_SS_CONNECTED | NUSE_SS_CONNECTING | NUSE_SS_LISTENING)) && !s->established &&
	    !s->connecting && !s->listening)
		return (int)fail(ENOTCONN);
	r = cmd_call(s, NUSE_OP_SHUTDOWN, &io);
	if (r < 0)
		return ret_err(r);
	if (s->listening || (st_load(s) & NUSE_SS_LISTENING)) {
		/* A listener stops listening (SHUT_RD): accept() then fails
		 * with EINVAL, as Linux's does, in the threads blocked in it
		 * too (the daemon hangs their pair up to wake them), and the
		 * fd polls OUT|HUP as Linux's closed socket (unpair). */
		if (how != SHUT_WR) {
			s->listening = 0;
			pthread_mutex_lock(&s->lock); /* as listen() and connect() */
			unpair(s, fd);
			pthread_mutex_unlock(&s->lock);
		}
		return 0;
	}
	if (how != SHUT_RD)
		s->shut_wr = 1;
	if (how != SHUT_WR)
		s->shut_rd = 1;
	return 0;
}

int nuse_name(struct nsock *s, uint16_t op, struct sockaddr *sa, socklen_t *len)
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
