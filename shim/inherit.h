/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inherit.h - listening sockets handed on (PROTOCOL.md "Listeners handed
 * on"): a listener's fd that goes to another program image or process is
 * kept by the daemon for its new holder, and a process that finds one
 * (inherited across exec, received over SCM_RIGHTS) takes a slot on the
 * same listener.  Implemented by inherit.c; it calls the session (the
 * NUSE_CTL_KEEP and NUSE_CTL_ADOPT exchanges), the fd table, the socket's
 * shared state (attach_slot) and the base.
 */
#ifndef NUSE_INHERIT_H
#define NUSE_INHERIT_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/* s, a listener, is being handed on: the daemon keeps it for the fd's next
 * holder when this process lets go.  0 or -errno. */
int keep_listener(struct nsock *s);

/* Before an exec that keeps its fd: keep_listener, and this image lets go
 * of s as a close would. */
void keep_listener_exec(struct nsock *s);

/* At start-up (and after a failed exec): every listener fd this image
 * holds without a slot gets one. */
void adopt_inherited(void);

/* After a recvmsg: listeners that came in SCM_RIGHTS get their slots. */
void adopt_msg_fds(const struct msghdr *m);

#pragma GCC visibility pop

#endif
