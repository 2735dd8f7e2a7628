/* SPDX-License-Identifier: Apache-2.0 */
/*
 * epcarry.h - the program's epoll registrations of a NUSE socket's file,
 * carried to the file the shim puts under the same fd numbers (a fresh
 * pair after the daemon hung the old one up: control.c).  Linux's socket
 * stays one file through a failed connect and the next, so its epoll sets
 * keep it; ours must be told.  The kernel lists each epoll fd's
 * registrations in /proc/self/fdinfo; those of the old file (by inode) are
 * saved before the swap and added again after it.  Only this process's
 * epoll fds are seen.  Implemented by epcarry.c, on the base only.
 */
#ifndef NUSE_EPCARRY_H
#define NUSE_EPCARRY_H

#include "nuse.h"

#include <sys/epoll.h>

#pragma GCC visibility push(hidden)

#define EPCARRY_MAX 16

struct epcarry {
	int n;
	struct {
		int epfd, fd;
		struct epoll_event ev;
	} r[EPCARRY_MAX];
};

/* Saves the registrations of the file with inode ino (0: none). */
void epcarry_save(struct epcarry *c, uint64_t ino);
/* Adds them again: the same fd numbers now name the new file. */
void epcarry_restore(const struct epcarry *c);

#pragma GCC visibility pop

#endif /* NUSE_EPCARRY_H */
