/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd.c - posting a command in an arena slot and waiting for its answer,
 * or not (an asynchronous CLOSE or keep-alive option) (cmd.h).  It calls the session (ctl_alive) and the base.
 */
#include "cmd.h"

#include <string.h>

/*
 * Claims a slot, fills it and submits it; NULL (and *err) when the daemon
 * is gone, or (unless wait) when no slot is free at once.
 */
static struct nuse_cmd *cmd_post_try(struct nsock *s, uint16_t op, struct cmd_io *io, uint16_t flags, int *err,
				     int wait)
{
	static atomic_uint hint;
	struct nuse_cmd *c = NULL;
	int i, tries;

	if (atomic_load(&S.dead)) {
		*err = -ECONNRESET;
		return NULL;
	}
	for (tries = 0; !c; tries++) {
		unsigned start = atomic_fetch_add(&hint, 1);

		for (i = 0; i < NUSE_CMD_SLOTS; i++) {
			struct nuse_cmd *t = &S.cmds[(start + (unsigned)i) % NUSE_CMD_SLOTS];
			uint32_t exp = NUSE_CMD_FREE;

			if (atomic_compare_exchange_strong(A32(&t->state), &exp, NUSE_CMD_CLAIMED)) {
				c = t;
				break;
			}
		}
		if (!c && !wait) {
			*err = -EAGAIN;
			return NULL;
		}
		if (!c) { /* all 64 busy: other threads' commands finish soon */
			struct timespec ts = {0, 100000};

			if (!ctl_alive()) {
				*err = -ECONNRESET;
				return NULL;
			}
			nanosleep(&ts, NULL);
		}
	}
	c->op = op;
	c->flags = flags;
	c->sock = s->slot;
	c->gen = s->gen;
	c->result = 0;
	c->waiting = 0;
	c->arg0 = io ? io->arg0 : 0;
	c->arg1 = io ? io->arg1 : 0;
	c->addrlen = 0;
	c->optlen = 0;
	if (io && io->addr && io->addrlen <= NUSE_ADDR_LEN) {
		memcpy(c->addr, io->addr, io->addrlen);
		c->addrlen = io->addrlen;
	}
	if (io && io->opt && io->optlen <= NUSE_OPT_LEN) {
		memcpy(c->opt, io->opt, io->optlen);
		c->optlen = io->optlen;
	}
	if (io && io->opt_out)
		c->optlen = io->opt_out_len > NUSE_OPT_LEN ? NUSE_OPT_LEN : io->opt_out_len;
	atomic_store_explicit(A32(&c->state), NUSE_CMD_SUBMITTED, memory_order_release);
	atomic_fetch_or(A64(&S.hdr->cmd_pending), 1ull << (c - S.cmds));
	doorbell();
	return c;
}

static struct nuse_cmd *cmd_post(struct nsock *s, uint16_t op, struct cmd_io *io, uint16_t flags, int *err)
{
	return cmd_post_try(s, op, io, flags, err, 1);
}

struct nuse_cmd *cmd_post_async_io(struct nsock *s, uint16_t op, struct cmd_io *io)
{
	int err;

	return cmd_post_try(s, op, io, NUSE_CMD_F_ASYNC, &err, 0);
}

void cmd_post_async(struct nsock *s, uint16_t op)
{
	int err;

	(void)cmd_post(s, op, NULL, NUSE_CMD_F_ASYNC, &err);
}

int cmd_call_raw(struct nsock *s, uint16_t op, struct cmd_io *io)
{
	struct nuse_cmd *c;
	uint64_t deadline;
	int i, r;

	c = cmd_post(s, op, io, 0, &r);
	if (!c)
		return r;
	deadline = now_ns() + S.spin_ns;
	for (i = 0; atomic_load_explicit(A32(&c->state), memory_order_acquire) != NUSE_CMD_DONE; i++) {
		if ((i & 63) == 63) {
			if (now_ns() >= deadline)
				break;
			spin_yield();
		}
		cpu_relax();
	}
	if (atomic_load_explicit(A32(&c->state), memory_order_acquire) != NUSE_CMD_DONE) {
		atomic_store(A32(&c->waiting), 1);
		while (atomic_load_explicit(A32(&c->state), memory_order_acquire) != NUSE_CMD_DONE) {
			struct timespec ts = {0, 50000000};

			futex(&c->state, FUTEX_WAIT, NUSE_CMD_SUBMITTED, &ts);
			if (atomic_load_explicit(A32(&c->state), memory_order_acquire) == NUSE_CMD_DONE)
				break;
			if (!ctl_alive())
				return -ECONNRESET; /* the slot is abandoned with the session */
		}
	}
	r = c->result;
	if (io && io->addr_out) {
		uint32_t l = c->addrlen;

		if (l > NUSE_ADDR_LEN)
			l = NUSE_ADDR_LEN;
		memcpy(io->addr_out, c->addr, l < io->addr_out_len ? l : io->addr_out_len);
		io->addr_out_len = l;
	}
	if (io && io->opt_out) {
		uint32_t l = c->optlen;

		if (l > NUSE_OPT_LEN)
			l = NUSE_OPT_LEN;
		memcpy(io->opt_out, c->opt, l < io->opt_out_len ? l : io->opt_out_len);
		io->opt_out_len = l;
	}
	atomic_store_explicit(A32(&c->state), NUSE_CMD_FREE, memory_order_release);
	return r;
}
