/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockstate.h - a NUSE socket's shared state in the arena (PROTOCOL.md
 * "Data", "Readiness"): attaching a socket to its slot, reading its state
 * word, the readiness byte (unsignal) and "filling" (fill), and the one
 * spin-then-sleep wait every blocking call uses (wait_fd).  Implemented by
 * sockstate.c; it calls the command slots (cmd.h: attention, SO_ERROR), the
 * session (ctl_alive) and the base.  The state and ring checks run on every
 * send and recv, so they stay inline here.
 */
#ifndef NUSE_SOCKSTATE_H
#define NUSE_SOCKSTATE_H

#include "cmd.h"
#include "fdtab.h"
#include "ring.h"
#include "session.h"

#pragma GCC visibility push(hidden)

static inline uint32_t st_load(struct nsock *s)
{
	return atomic_load_explicit(A32(&s->sh->state), memory_order_acquire);
}

static inline int is_connected(struct nsock *s, uint32_t st)
{
	return (st & NUSE_SS_CONNECTED) || s->established;
}

static inline int is_connecting(struct nsock *s, uint32_t st)
{
	return !is_connected(s, st) && ((st & NUSE_SS_CONNECTING) || s->connecting);
}

/* The daemon would call this socket readable (PROTOCOL.md "Readiness"). */
static inline int readable(struct nsock *s)
{
	struct nuse_ring *rx = s->rx;
	uint64_t head = atomic_load_explicit(A64(&rx->head), memory_order_acquire);
	uint64_t tail = nuse_ring_start(head, rx->tail, atomic_load_explicit(A64(&rx->skip), memory_order_relaxed));

	/* SO_RCVLOWAT: fewer bytes than it do not make the socket readable */
	return (head != tail && head - tail >= s->rcvlowat) ||
	       (st_load(s) & (NUSE_SS_RD_EOF | NUSE_SS_RESET | NUSE_SS_ERROR | NUSE_SS_ACCEPTQ));
}

static inline int tx_has_space(struct nsock *s)
{
	struct nuse_ring *tx = s->tx;
	uint64_t tail = atomic_load_explicit(A64(&tx->tail), memory_order_acquire);

	/* a peer's bogus tail counts as room: the send then finds it insane */
	return nuse_ring_free(tx->head, tail, s->ring_size) > 0;
}

static inline uint64_t deadline_of(int64_t ms)
{
	return ms > 0 ? now_ns() + (uint64_t)ms * 1000000ull : 0;
}

/*
 * Sleeps on the app fd for ev (POLLIN or POLLOUT) after spinning up to
 * spin_ns on ready(s).  Returns 0 to re-check, -ETIMEDOUT/-EINTR, or
 * -EPIPE when the daemon's end is gone.  -EINTR as Linux would give it:
 * by the handlers that ran since the call began (signals.h; the caller
 * marked them with sig_call_begin).
 */
int wait_fd_raw(struct nsock *s, int fd, short ev, int (*ready)(struct nsock *), uint64_t deadline);

/* Returns -errno values itself: the caller's errno stays as it was. */
static inline int wait_fd(struct nsock *s, int fd, short ev, int (*ready)(struct nsock *), uint64_t deadline)
{
	int e = errno, r = wait_fd_raw(s, fd, ev, ready, deadline);

	errno = e;
	return r;
}

/* Points s at arena slot `slot` (generation gen): s becomes a NUSE socket
 * whose application end is fd. */
void attach_slot(struct nsock *s, uint32_t slot, uint32_t gen, int fd);
/* A listener with nothing to accept: takes the readiness bytes its own
 * count does not cover (another holder's, or left behind). */
void take_stray(struct nsock *s, int fd);

/* Takes the readiness bytes back when the socket is no longer readable. */
void unsignal(struct nsock *s, int fd);
/* ... and all but one when it still is (after a read or an accept). */
void unsignal_extra(struct nsock *s, int fd);
/* Makes the app fd poll unwritable (tx ring full, connect under way). */
void fill(struct nsock *s, int fd);
/* Is the app fd's hang-up the daemon's mirror of the socket's end? */
int daemon_hup(struct nsock *s);
/* Before answering EAGAIN: has the daemon's end gone away? */
int hung_up(struct nsock *s, int fd);
/* What wait_fd waits for: data/EOF/accept, tx space, a connect's outcome. */
int rx_ready(struct nsock *s);
int tx_ready(struct nsock *s);
int conn_ready(struct nsock *s);
/* SO_ERROR from the daemon: returns and clears the pending error. */
int take_so_error(struct nsock *s, int fd);
/* A read's answer on a reset or failed socket: its error, or 0 once told. */
int reset_error(struct nsock *s, int fd, uint32_t st);
/* Clears the app end's own error (a cut pair's POLLERR) once reported. */
void clear_app_err(struct nsock *s, int fd);

#pragma GCC visibility pop

#endif /* NUSE_SOCKSTATE_H */
