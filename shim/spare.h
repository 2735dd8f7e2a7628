/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spare.h - spare socketpairs (PROTOCOL.md "Spare pairs"): pairs whose
 * daemon end the daemon already holds (NUSE_CTL_SPARES), so that a socket's
 * birth (decide.c) and an accept (control.c) are one command on the ring
 * (NUSE_OP_SOCKET, NUSE_OP_ACCEPT) instead of a control round trip.
 * spare.c owns this process's pool of its ends: refilling it, keeping its
 * fds out of the program's way (close, dup2 and close_range leave them
 * alone, as the control socket), and letting it go in a fork child.
 */
#ifndef NUSE_SPARE_H
#define NUSE_SPARE_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/*
 * A spare for a birth or an accept: our end (close-on-exec, at a high fd
 * number), its id in *id; -1 when there is none (the pool is empty and
 * refilling it failed, or this process has made too few sockets for a
 * pool to pay): the caller takes the control socket's way.
 */
int spare_take(uint32_t *id);

/* The command that took it failed without using it: back to the pool. */
void spare_put(uint32_t id, int fd);

struct cmd_io;
struct nuse_op_born;

/*
 * Runs op (NUSE_OP_SOCKET or NUSE_OP_ACCEPT) on a spare, io->arg0 its id;
 * the daemon's answer lands in *born (*born_len bytes: io's addr_out or
 * opt_out).  dupfd (F_DUPFD or F_DUPFD_CLOEXEC, or -1) moves our end to
 * the lowest free number, taken before the command.  Returns 0 with *fd
 * our end (the caller's now); -errno from the daemon, or -EMFILE/-ENFILE
 * for the number (the spare went back to the pool); 1 when there is no
 * spare to use (none, or one the daemon does not hold): the control
 * socket's way.
 */
int spare_call(struct nsock *s, uint16_t op, struct cmd_io *io, const struct nuse_op_born *born,
	       const uint32_t *born_len, int dupfd, int *fd);

/* Is fd one of the pool's (a number the program must not close)? */
int spare_owns(int fd);

/* The first of the pool's fds in [from, last], or ~0u. */
unsigned spare_next(unsigned from, unsigned last);

/* The program puts another file on fd (dup2/dup3): if it was a spare, the
 * pool forgets it (the daemon lets go of its end once it hangs up). */
void spare_yield(int fd);

/* In a fork child: the parent's spares are the parent's; closed here. */
void spare_atfork_child(void);

#pragma GCC visibility pop

#endif /* NUSE_SPARE_H */
