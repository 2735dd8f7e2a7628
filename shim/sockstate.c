/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockstate.c - a NUSE socket's shared state (sockstate.h): its slot, the
 * readiness byte, filling, and the spin-then-sleep wait.  It calls the
 * command slots (cmd.h), the session (ctl_alive), the signal handlers'
 * record (signals.h: restart or EINTR) and the base.
 */
#include "sockstate.h"

#include <poll.h>
#include <sys/stat.h>

#include "lazy.h"
#include "signals.h"
#include "wake.h"

void attach_slot(struct nsock *s, uint32_t slot, uint32_t gen, int fd)
{
	uint8_t *base = S.base + S.socks_off + (uint64_t)slot * S.stride;
	struct stat st;

	s->ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
	s->slot = slot;
	s->gen = gen;
	s->sh = (struct nuse_sock *)base;
	s->rx = &s->sh->rx;
	s->tx = &s->sh->tx;
	s->rx_data = base + NUSE_SOCK_HDR_SIZE;
	s->tx_data = base + NUSE_SOCK_HDR_SIZE + S.ring_size;
	s->ring_size = S.ring_size;
	s->dir = NULL;
	atomic_store(&s->dir_ready, 0);
	s->kind = K_NUSE;
	atomic_store(&g_sh->procs[slot], 1);
}

/*
 * Reads n readiness bytes (and any owed from before) from our end.  The
 * daemon counts a byte in sig before it writes it, so one may still be in
 * flight: if wait, we wait for it briefly; what does not come (a byte a
 * raw read() took, a daemon slow to write) is owed and taken next time,
 * never waited for again, so no byte is left to make the fd poll readable
 * for nothing.  Our end reading EOF is the daemon mirroring the peer's FIN
 * or a reset (the state says so) -- or the daemon gone.
 */
/*
 * The daemon hangs the pair up itself when the socket is reset, fails to
 * connect or is a listener shut down (PROTOCOL.md "Readiness"): the app fd
 * then polls HUP (and reads EOF) as Linux's socket does, and only the
 * control socket says whether the daemon is still there.
 */
int daemon_hup(struct nsock *s)
{
	uint32_t st = st_load(s);

	if (!(st & NUSE_SS_RESET) && (!(st & (NUSE_SS_RD_EOF | NUSE_SS_WR_DEAD)) || (st & NUSE_SS_CONNECTED)))
		return 0;
	return !atomic_load(&S.dead) && ctl_alive();
}

static void take_bytes(struct nsock *s, int fd, uint32_t n, int wait)
{
	char b[64];
	int i = 0;

	n += s->sig_owed;
	s->sig_owed = 0;
	while (n > 0) {
		ssize_t r = R.recv(fd, b, n < sizeof(b) ? n : sizeof(b), MSG_DONTWAIT);
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (r > 0) {
			n -= (uint32_t)r;
			continue;
		}
		if (r == 0) {
			if (!(st_load(s) & (NUSE_SS_RD_EOF | NUSE_SS_RESET)) && !daemon_hup(s))
				s->dead = 1;
			return;
		}
		if ((errno != EAGAIN && errno != EINTR) || !wait || ++i > 10)
			break;
		rpoll(&p, 1, 10);
	}
	s->sig_owed = n;
}

/*
 * Takes the readiness bytes back when the socket is no longer readable:
 * exactly as many as it takes from sig (draining more could swallow a
 * newer edge's byte and lose a wake-up).
 */
void unsignal(struct nsock *s, int fd)
{
	int e = errno;

	wake_fold(s);
	if (atomic_load_explicit(A32(&s->sh->sig), memory_order_relaxed) == NUSE_SIG_NONE && !s->sig_owed)
		return;
	take_bytes(s, sock_fd(s, fd), atomic_exchange(A32(&s->sh->sig), NUSE_SIG_NONE), 1);
	if (readable(s))
		attention(s); /* became readable meanwhile: let the daemon signal again */
	errno = e;
}

/*
 * A shared listener (handed on, inherit.h) with nothing to accept whose fd
 * still reads readable: the bytes are another session's holder's, one a
 * holder left behind when it went away, or one queued for a connection
 * another holder took.  A leftover would keep a level-triggered poller
 * spinning on EAGAIN, so take them all and start our count again; a
 * holder whose byte this was gets another with the next connection (every
 * new connection is an edge for every holder's slot, Session.signal).
 */
void take_stray(struct nsock *s, int fd)
{
	char b[64];
	int e = errno;

	if (!s->listening || !(st_load(s) & NUSE_SS_SHARED))
		return; /* one session's holders share one count: theirs to take */
	fd = sock_fd(s, fd);
	atomic_exchange(A32(&s->sh->sig), NUSE_SIG_NONE);
	while (R.recv(fd, b, sizeof(b), MSG_DONTWAIT) > 0)
		;
	/* Counted while we read: its byte may be gone or still coming; a stray
	 * one is taken next time, a missing one would be a wake-up lost. */
	atomic_exchange(A32(&s->sh->sig), NUSE_SIG_NONE);
	s->sig_owed = 0;
	if (readable(s))
		attention(s); /* a connection came meanwhile: signal it again */
	errno = e;
}

/*
 * A read or accept left the socket readable: take back all but one of the
 * readiness bytes, so that the fd stays readable and the daemon's byte for
 * the next arrival is a new edge (an EPOLLET program that takes one
 * connection or one chunk per event waits for exactly that).
 */
void unsignal_extra(struct nsock *s, int fd)
{
	uint32_t v;
	int e = errno;

	wake_fold(s);
	v = atomic_load_explicit(A32(&s->sh->sig), memory_order_relaxed);
	while (v > 1 && !atomic_compare_exchange_weak(A32(&s->sh->sig), &v, 1))
		;
	if (v <= 1)
		return;
	take_bytes(s, sock_fd(s, fd), v - 1, 0);
	errno = e;
}

/*
 * Makes the app fd poll unwritable: the tx ring is full or a connect is
 * under way.  The daemon empties its end ("unfills") when that is over, and
 * its reads are what wake pollers for POLLOUT.
 *
 * This fills every time it is called, not only on a NONE -> DONE change:
 * the daemon may drain concurrently (it stores NONE, then reads), and a fill
 * skipped because the flag still said DONE would leave a writable fd with no
 * wake-up to come -- an edge-triggered epoll user would wait forever.  So:
 * write junk until EAGAIN, then publish DONE (seq_cst), then recheck.  Either
 * the daemon drained after our EAGAIN (its reads woke pollers), or the junk
 * is still there and DONE tells the daemon to drain it once there is room.
 */
void fill(struct nsock *s, int fd)
{
	static const char junk[1024];
	int e = errno, i;

	fd = sock_fd(s, fd);
	if (!s->sndbuf_small) {
		int one = 1;

		R.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
		s->sndbuf_small = 1;
	}
	for (i = 0; i < 1024; i++) {
		ssize_t n;

		/* Counted before it is written, so the daemon never finds more
		 * junk than counted: any excess is the program's own bytes. */
		atomic_fetch_add(A64(&s->sh->fill_bytes), sizeof(junk));
		n = R.send(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < (ssize_t)sizeof(junk))
			atomic_fetch_sub(A64(&s->sh->fill_bytes), sizeof(junk) - (n > 0 ? (size_t)n : 0));
		if (n < 0)
			break;
	}
	/* Direct: the peer's program frees our room; it flags its socket for
	 * the daemon (which unfills us) when it sees this. */
	if (atomic_load_explicit(&s->dir_ready, memory_order_acquire))
		atomic_store(A32(&s->dir->wwait[s->dside]), 1);
	atomic_store(A32(&s->sh->fill), NUSE_FILL_DONE);
	if ((tx_has_space(s) && !(st_load(s) & NUSE_SS_CONNECTING)) ||
	    (st_load(s) & (NUSE_SS_CONNECTED | NUSE_SS_ERROR | NUSE_SS_RESET)))
		attention(s);
	errno = e;
}

int wait_fd_raw(struct nsock *s, int fd, short ev, int (*ready)(struct nsock *), uint64_t deadline)
{
	uint64_t until = now_ns() + S.spin_ns;
	struct pollfd p = {.fd = sock_fd(s, fd), .events = ev};
	struct sig_mark m = g_sig_call; /* handlers since the call began decide EINTR */
	/* A direct reader says it spins (nuse_direct.rspin): its writer then
	 * rings nobody, and the bytes come without the daemon. */
	_Atomic uint32_t *spin =
		ev == POLLIN && atomic_load_explicit(&s->dir_ready, memory_order_acquire) ? A32(&s->dir->rspin[s->dside]) : NULL;
	int i, r, e, ms = 1000;

	if (spin)
		atomic_fetch_add(spin, 1);
	for (i = 0;; i++) {
		if (ready(s)) {
			if (spin)
				atomic_fetch_sub(spin, 1);
			return 0;
		}
		if ((i & 63) == 63) {
			if (now_ns() >= until)
				break;
			spin_yield();
		}
		cpu_relax();
	}
	if (spin) {
		/* Dekker with the writer (head, fence, rspin): it saw us spin
		 * and rang nobody, or we see its bytes now. */
		atomic_fetch_sub(spin, 1);
		if (ready(s))
			return 0;
	}
	/* A handler ran since the call began: Linux's call was inside by then. */
	if (sig_interrupted(&m, deadline != 0))
		return -EINTR;
	if (deadline) {
		uint64_t n = now_ns();

		if (n >= deadline)
			return -ETIMEDOUT;
		if ((deadline - n) / 1000000 + 1 < (uint64_t)ms)
			ms = (int)((deadline - n) / 1000000 + 1);
	}
	/* Lazy readiness: the daemon writes the byte of a lazy socket's data
	 * only while someone sleeps on it (lazy.h); counted, we look once
	 * more, then sleep.  A listener's readiness is never lazy. */
	if (ev == POLLIN && !s->listening) {
		lazy_watch_sock(s, 1);
		if (ready(s)) {
			lazy_watch_sock(s, -1);
			return 0;
		}
		r = rpoll(&p, 1, ms);
		e = errno;
		lazy_watch_sock(s, -1);
		errno = e;
	} else
		r = rpoll(&p, 1, ms);
	/* The program closed the fd meanwhile (we hold it as orphan_fd): what
	 * poll said is about that number, maybe another file by now. */
	if (sock_fd(s, fd) != p.fd)
		return 0;
	/*
	 * A whole slice without news: remind the daemon of this socket, so
	 * that an event it lost (a FIN behind a short read, rx space it waits
	 * for) costs at most a slice, never a hang.  One wake-up per second
	 * per thread blocked in the shim.
	 */
	if (r == 0)
		attention(s);
	if (r < 0) {
		if (errno != EINTR)
			return 0;
		return sig_restart(&m, deadline != 0) ? 0 : -EINTR;
	}
	if (r > 0 && ((p.revents & POLLNVAL) || ((p.revents & (POLLHUP | POLLERR)) && !daemon_hup(s)))) {
		char b;

		/* POLLHUP with queued bytes: EOF shows only after them */
		if (!(p.revents & POLLIN) || R.recv(p.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
			s->dead = 1;
			return -EPIPE;
		}
	}
	if (atomic_load(&S.dead) || !ctl_alive()) {
		s->dead = 1;
		return -EPIPE;
	}
	return 0;
}

/*
 * Before answering EAGAIN: has the daemon's end gone away?  Then the app
 * fd polls POLLHUP forever, and EAGAIN would make a poll loop spin.
 */
int hung_up(struct nsock *s, int fd)
{
	struct pollfd p = {.fd = sock_fd(s, fd), .events = POLLIN};
	int e = errno;

	if (s->dead || atomic_load(&S.dead))
		return 1;
	if (rpoll(&p, 1, 0) == 1 &&
	    ((p.revents & POLLNVAL) || ((p.revents & (POLLHUP | POLLERR)) && !daemon_hup(s))))
		s->dead = 1;
	errno = e;
	return s->dead;
}

int rx_ready(struct nsock *s)
{
	return readable(s);
}

int tx_ready(struct nsock *s)
{
	return tx_has_space(s) || (st_load(s) & (NUSE_SS_WR_DEAD | NUSE_SS_RESET | NUSE_SS_ERROR));
}

int conn_ready(struct nsock *s)
{
	uint32_t st = st_load(s);

	return (st & (NUSE_SS_CONNECTED | NUSE_SS_ERROR | NUSE_SS_RESET)) ||
	       (!(st & NUSE_SS_CONNECTING) && !s->connecting);
}

/*
 * A failed connect's pair is cut with junk unread in the daemon's end, so
 * the app end holds ECONNRESET and polls ERR (PROTOCOL.md "Readiness"):
 * once the socket's error is reported, as in Linux, it goes.
 */
void clear_app_err(struct nsock *s, int fd)
{
	int v, e = errno;
	socklen_t l = sizeof(v);

	R.getsockopt(sock_fd(s, fd), SOL_SOCKET, SO_ERROR, &v, &l);
	errno = e;
}

/*
 * The daemon reset the connection because the program wrote bytes the shim
 * never saw: say why, once per process, where the program's user can see
 * it (PROTOCOL.md "Raw writes and reads").
 */
static void raw_notice(struct nsock *s)
{
	static _Atomic int told;

	if ((st_load(s) & NUSE_SS_RAW) && !atomic_exchange(&told, 1))
		say("nuse: the program wrote to a NUSE socket past the preload (a raw syscall or io_uring): "
		    "NUSE cannot carry those bytes in order, so the connection was reset");
}

/* SO_ERROR from the daemon: returns and clears the pending error. */
int take_so_error(struct nsock *s, int fd)
{
	int v = 0;
	struct cmd_io io = {.arg0 = SOL_SOCKET, .arg1 = SO_ERROR, .opt_out = &v, .opt_out_len = sizeof(v)};
	int r = cmd_call(s, NUSE_OP_GETSOCKOPT, &io);

	if (r < 0)
		return -r;
	raw_notice(s);
	clear_app_err(s, fd);
	return v;
}

/*
 * What a read of a reset (or failed) socket with nothing left says: the
 * pending error, taken; once SO_ERROR (or an earlier read) has reported
 * it, Linux's reads see the shut receive side and return 0.  A slot the
 * daemon let go of, or a daemon gone, still says ECONNRESET.
 */
int reset_error(struct nsock *s, int fd, uint32_t st)
{
	int v = 0;
	struct cmd_io io = {.arg0 = SOL_SOCKET, .arg1 = SO_ERROR, .opt_out = &v, .opt_out_len = sizeof(v)};

	if (s->dead || atomic_load(&S.dead))
		return ECONNRESET;
	if (!(st & NUSE_SS_ERROR) && s->reset_told)
		return 0;
	if (cmd_call(s, NUSE_OP_GETSOCKOPT, &io) < 0)
		return ECONNRESET;
	raw_notice(s);
	clear_app_err(s, fd);
	if (!v && !(st & NUSE_SS_RESET))
		return ECONNRESET; /* failed, not reset: as before */
	s->reset_told = 1;
	return v;
}
