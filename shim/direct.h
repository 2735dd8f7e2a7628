/* SPDX-License-Identifier: Apache-2.0 */
/*
 * direct.h - the direct region of a shm connection (PROTOCOL.md "Direct
 * connections"): fetching it from the daemon (NUSE_CTL_DIRECT), checking
 * and mapping it, pointing the socket's rings at it, and letting it go.
 * Implemented by direct.c; it calls the session and the base.  The data
 * path (stream.c, sockstate) then uses s->rx/s->tx as it uses the arena's.
 */
#ifndef NUSE_DIRECT_H
#define NUSE_DIRECT_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/*
 * Maps the socket's region if its state says it has one and it is not
 * mapped yet.  Returns 0 (mapped, or nothing to map) or -errno; on error
 * the socket is dead (its peer can no longer be reached).
 */
int direct_map_slow(struct nsock *s);

static inline int direct_need(struct nsock *s)
{
	return !atomic_load_explicit(&s->dir_ready, memory_order_acquire) &&
	       (atomic_load_explicit(A32(&s->sh->state), memory_order_acquire) & NUSE_SS_DIRECT);
}

static inline int direct_map(struct nsock *s)
{
	return unlikely(direct_need(s)) ? direct_map_slow(s) : 0;
}

/* After publishing tx bytes: does a thread of the peer spin for them?  Then
 * nobody need be told (the fence orders our head store before the load). */
static inline int direct_peer_spins(struct nsock *s)
{
	if (!s->dir)
		return 0;
	atomic_thread_fence(memory_order_seq_cst);
	return atomic_load_explicit(A32(&s->dir->rspin[s->dside ^ 1]), memory_order_relaxed) != 0;
}

/* The socket is let go of in this process: its mapping goes (the memory
 * stays valid to read for a thread racing the close, see direct.c). */
void direct_release(struct nsock *s);

/* In a fork child: the lock another thread may have held is made anew. */
void direct_atfork_child(void);

#pragma GCC visibility pop

#endif /* NUSE_DIRECT_H */
