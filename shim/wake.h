/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wake.h - a direct (shm) connection's peer waker (PROTOCOL.md "Direct
 * connections", "Waking the peer"): the copy of the daemon's end of the
 * peer's app pair that the daemon gives a writer (NUSE_CTL_WAKE), so that
 * the writer makes its reader's fd readable itself, without the daemon.
 * wake.c owns getting it, writing the readiness byte (counted in the
 * region's psig), keeping the fd out of the program's way (close, dup2 and
 * close_range leave it alone), letting it go, and the thread that, if the
 * daemon dies, shuts the peers' wakers so that their fds hang up as they
 * would without our copies.  It calls the session, the fd table and the base.
 */
#ifndef NUSE_WAKE_H
#define NUSE_WAKE_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/* As the daemon's maxEdges: readiness bytes a writer queues in its peer's
 * fd at most (each new write is an edge for an EPOLLET reader). */
#define NUSE_WAKE_MAX_EDGES 64

/*
 * After publishing tx bytes (with tx_lock held and the fence of
 * direct_peer_spins done): writes the peer's readiness byte if the region
 * allows it.  Returns 0 if the peer was woken (or has bytes enough queued),
 * -1 if the daemon must be told instead (attention).
 */
int wake_peer(struct nsock *s);

/* The socket lets go of its region: its waker goes too. */
void wake_release(struct nsock *s);

/* Is fd one of ours (a waker the program must not close)? */
int wake_owns(int fd);

/* The first waker in [from, last], or ~0u. */
unsigned wake_next(unsigned from, unsigned last);

/* The program puts another file on fd (dup2/dup3): if it was a waker, we
 * let go of it first (its socket's writes then tell the daemon). */
void wake_yield(int fd);

/* In a fork child: the wakers inherited are closed (the child asks for
 * its own), and the watcher is the parent's. */
void wake_atfork_child(void);

/* The program put the socket in an epoll set with EPOLLET: its peer's
 * writes must each be an edge (a byte), not one byte for all. */
void wake_edge_triggered(struct nsock *s);

/* The readiness bytes the peer counted in for our fd (each there, or
 * about to be): folded into our sig, so that the code that takes bytes
 * back sees one count. */
static inline void wake_fold(struct nsock *s)
{
	if (s->dir) {
		_Atomic uint32_t *p = A32(&s->dir->psig[s->dside]);

		if (atomic_load_explicit(p, memory_order_relaxed)) {
			uint32_t n = atomic_exchange(p, 0);

			/* An honest peer keeps it under NUSE_WAKE_MAX_EDGES (plus
			 * one per writer thread racing); a larger count is a
			 * peer's lie, which must not make us wait for ever more. */
			if (n > 16 * NUSE_WAKE_MAX_EDGES)
				n = 16 * NUSE_WAKE_MAX_EDGES;
			if (n)
				atomic_fetch_add(A32(&s->sh->sig), n);
		}
	}
}

/* Is a readiness byte (the daemon's or the peer's) queued in our fd? */
static inline int sig_queued(struct nsock *s)
{
	return atomic_load(A32(&s->sh->sig)) != NUSE_SIG_NONE ||
	       (s->dir && atomic_load(A32(&s->dir->psig[s->dside])) != 0);
}

#pragma GCC visibility pop

#endif /* NUSE_WAKE_H */
