/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd.h - the doorbell, the attention bits and the command slots
 * (PROTOCOL.md "Doorbell", "Command slots"): how the shim tells the daemon
 * that a socket changed, and how it posts a control call and waits for the
 * answer.  cmd_call_raw is in cmd.c; the doorbell and attention run on
 * every send and recv, so they stay inline here.  It calls the session
 * (ctl_alive) and the base.
 */
#ifndef NUSE_CMD_H
#define NUSE_CMD_H

#include <linux/futex.h>

#include "fdtab.h"
#include "session.h"

#pragma GCC visibility push(hidden)

/*
 * The first ring after the daemon announced sleep takes the announcement
 * (exchange to 0) and wakes it; later ones, until it sleeps again, only
 * count.  Left set, every write while the daemon was waking cost a
 * FUTEX_WAKE of its own: 0.7 system calls per redis GET.
 */
static inline void doorbell(void)
{
	_Atomic uint32_t *sl = (_Atomic uint32_t *)&S.hdr->d_sleeping;

	atomic_fetch_add((_Atomic uint32_t *)&S.hdr->d_seq, 1);
	if (atomic_load(sl) && atomic_exchange(sl, 0))
		futex(&S.hdr->d_seq, FUTEX_WAKE, 1, NULL);
}

static inline void attention(struct nsock *s)
{
	_Atomic uint64_t *w = (_Atomic uint64_t *)&S.hdr->attention[s->slot / 64];
	uint64_t bit = 1ull << (s->slot % 64);

	/*
	 * Bit still set: the daemon has not taken it yet and will see what we
	 * just published when it does (its sleep path rechecks attention), so
	 * the doorbell's shared counter need not bounce.  The fence orders our
	 * head/tail store before this load.
	 */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(w, memory_order_relaxed) & bit)
		return;
	atomic_fetch_or(w, bit);
	doorbell();
}

struct cmd_io {
	uint32_t arg0, arg1;
	const void *addr;
	uint32_t addrlen;
	const void *opt;
	uint32_t optlen;
	void *addr_out;
	uint32_t addr_out_len; /* in: room; out: bytes given */
	void *opt_out;
	uint32_t opt_out_len;
};

/*
 * Posts a command and waits for its answer: spin up to spin_ns, then
 * FUTEX_WAIT in slices of 50 ms, checking that the daemon is still there.
 * Returns the result, or -ECONNRESET when the daemon is gone.
 */
int cmd_call_raw(struct nsock *s, uint16_t op, struct cmd_io *io);

/*
 * Posts a command nobody waits for (NUSE_CMD_F_ASYNC: the daemon frees the
 * slot; only CLOSE, whose answer is always 0): the daemon runs it before
 * any command posted after it.  Nothing happens when the daemon is gone.
 */
void cmd_post_async(struct nsock *s, uint16_t op);

/*
 * The same with arguments (a SETSOCKOPT that needs no answer, options.c):
 * the slot it took, or NULL when none was free at once or the daemon is
 * gone (the caller then waits for an answer after all).
 */
struct nuse_cmd *cmd_post_async_io(struct nsock *s, uint16_t op, struct cmd_io *io);

/* The waits inside (futex, poll) must not leak errno into a call that succeeds. */
static inline int cmd_call(struct nsock *s, uint16_t op, struct cmd_io *io)
{
	int e = errno, r = cmd_call_raw(s, op, io);

	errno = e;
	return r;
}

#pragma GCC visibility pop

#endif /* NUSE_CMD_H */
