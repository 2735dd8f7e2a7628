/* SPDX-License-Identifier: Apache-2.0 */
/*
 * control.h - the control calls of a NUSE socket (PROTOCOL.md "Command
 * slots", "Connect and accept"): what bind, listen, connect, accept,
 * shutdown, close and getsockname/getpeername do once a socket lives in
 * the daemon (its options: options.h).  Implemented by control.c.
 *
 * The nuse_bind/listen/connect family returns 0 or -errno (the
 * decision in decide.c chains them); the others return the libc result
 * (-1 with errno), as the interposer that calls them does.
 */
#ifndef NUSE_CONTROL_H
#define NUSE_CONTROL_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

int nuse_bind(struct nsock *s, const struct sockaddr *sa, socklen_t len);
int nuse_listen(struct nsock *s, int fd, int backlog);
int nuse_connect(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len);

/* accept4(): a new fd for the next connection of listener s. */
int nuse_accept(struct nsock *s, int fd, struct sockaddr *sa, socklen_t *len, int flags);
/* shutdown() with how checked by the caller. */
int nuse_shutdown(struct nsock *s, int fd, int how);
/* getsockname() (NUSE_OP_GETSOCKNAME) or getpeername(). */
int nuse_name(struct nsock *s, uint16_t op, struct sockaddr *sa, socklen_t *len);

/* close() of a tracked fd: drops its reference; the last one closes the
 * socket (CLOSE, if no other process holds it) -- or, if a thread is
 * blocked on the socket, leaves that to the thread's sock_unhold. */
void drop_fd(int fd);

/*
 * A call that may block on s (reached through fd) holds it for its whole
 * length: a close() of fd meanwhile then only takes the fd number away, as
 * in Linux, where the blocked call keeps the file and the connection lives
 * on (no FIN) until it returns.  sock_hold returns 0 if fd no longer names
 * s (closed before the hold); the last sock_unhold finishes such a close.
 */
int sock_hold(struct nsock *s, int fd);
void sock_unhold(struct nsock *s);

#pragma GCC visibility pop

#endif /* NUSE_CONTROL_H */
