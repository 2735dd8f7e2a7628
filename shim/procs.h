/* SPDX-License-Identifier: Apache-2.0 */
/*
 * procs.h - sockets shared with other processes: fork() children share the
 * session and its sockets (see the choices in nuse.c).  Implemented by
 * procs.c, which also holds the exit destructor.
 */
#ifndef NUSE_PROCS_H
#define NUSE_PROCS_H

#include "fdtab.h"
#include "session.h"

#pragma GCC visibility push(hidden)

/* This process lets go of s: 1 if no other process holds it any more. */
int procs_release(struct nsock *s);

/* Around an exec: lower the counts of sockets other processes hold too
 * (returns whether it did), and raise them again if the exec failed. */
int exec_prepare(void);
void exec_failed(int prepared);

/* The pthread_atfork handlers, registered at load (base.c). */
void atfork_prepare(void);
void atfork_parent(void);
void atfork_child(void);

#pragma GCC visibility pop

#endif /* NUSE_PROCS_H */
