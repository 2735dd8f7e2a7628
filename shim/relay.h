/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relay.h - handing a NUSE socket to code the shim does not see
 * (PROTOCOL.md "Relayed sockets"): another program image (exec,
 * posix_spawn), another process (SCM_RIGHTS), libc's stdio (fdopen, the
 * standard streams).  The daemon then relays the connection's bytes through
 * a fresh socketpair whose end replaces the program's fds: a plain stream
 * socket on which every path works, shim or not.  Implemented by relay.c;
 * it calls the session (the NUSE_CTL_RELAY exchange), the fd table and the
 * base, and, to let go of the rings, the command slots and procs.h.
 */
#ifndef NUSE_RELAY_H
#define NUSE_RELAY_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/* Relays s: every fd of this process that names it names the relay's end
 * from then on, and the shim forgets s (the last process to let go of its
 * rings sends CLOSE, and the daemon's relay takes over).  0, or -errno (s
 * stays as it was: a listener, an unconnected or dead socket, a thread
 * blocked on it, one handed on already and still held). */
int relay_sock(struct nsock *s);

/* Before an exec (in a vfork child too): relays every NUSE socket that an
 * fd surviving the exec names, and has the daemon keep every such listener
 * for the new image (inherit.h).  leaving: this image is the one that
 * execs (not posix_spawn's parent, which goes on holding its listeners). */
void relay_for_exec(int leaving);

/* Before a sendmsg: relays the NUSE sockets an SCM_RIGHTS message carries. */
void relay_msg_fds(const struct msghdr *m);

/*
 * getsockname (peer 0) or getpeername (peer 1) of an fd the kernel called
 * an AF_UNIX socket: if it is a relayed NUSE socket (this process got it
 * over SCM_RIGHTS or across an exec), the daemon says its TCP address and
 * sa/len get that.  Returns 0 if so, -1 if fd is no relay.
 */
int relay_name(int fd, int peer, struct sockaddr *sa, socklen_t *len);

#pragma GCC visibility pop

#endif /* NUSE_RELAY_H */
