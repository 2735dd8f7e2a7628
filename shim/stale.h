/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stale.h - fd numbers the kernel hands out anew.  A tracked socket may be
 * closed where the shim cannot see it (syscall(SYS_close), a close inside
 * libc such as fclose(fdopen(s))); its table entry then outlives the file,
 * and the next file, pipe or socket the kernel numbers the same would be
 * taken for the old socket.  Every call that gives the program a new fd
 * (ix_newfd.c, socket/accept/dup/fcntl(F_DUPFD)/recvmsg SCM_RIGHTS) passes
 * the number through fd_fresh(): a table entry on a number the kernel just
 * gave out can only be stale, and it is let go of as the program's close
 * would have.  Implemented by stale.c, which calls control (drop_fd) and
 * the fd table.
 */
#ifndef NUSE_STALE_H
#define NUSE_STALE_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/* Lets go of the (stale) entry on fd, a number the kernel just gave out. */
void stale_drop(int fd);
/* The same for every fd of the SCM_RIGHTS messages of m. */
void stale_drop_cmsg(const struct msghdr *m);

/* A new fd from the kernel (or -1): one array load unless it is stale. */
static inline int fd_fresh(int fd)
{
	if (unlikely(fd_get(fd) != NULL))
		stale_drop(fd);
	return fd;
}

/* recvmsg() on a kernel socket: the fds it received are new too. */
static inline void fd_fresh_msg(ssize_t r, const struct msghdr *m)
{
	if (r >= 0 && m && unlikely(m->msg_controllen != 0))
		stale_drop_cmsg(m);
}

#pragma GCC visibility pop

#endif /* NUSE_STALE_H */
