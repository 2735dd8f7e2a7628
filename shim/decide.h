/* SPDX-License-Identifier: Apache-2.0 */
/*
 * decide.h - the decision: bind/listen/connect/setsockopt of a socket the
 * shim tracks.  A NUSE socket's call goes on to its control call
 * (control.h); an undecided one is decided here, by the rules (rules.h) or
 * SO_BINDTODEVICE to the NUSE device.  Implemented by decide.c.  Each
 * returns the libc result (-1 with errno on failure).
 */
#ifndef NUSE_DECIDE_H
#define NUSE_DECIDE_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

int sock_bind(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len);
int sock_listen(struct nsock *s, int fd, int backlog);
int sock_connect(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len);
/* setsockopt before the decision: done in the kernel, recorded for replay. */
int undecided_setsockopt(struct nsock *s, int fd, int level, int name, const void *val, socklen_t len);

/* epoll_ctl() on an undecided socket went through: remembered, so that
 * the registration survives the move to NUSE. */
void undecided_epoll(struct nsock *s, int epfd, int op, int fd, const struct epoll_event *ev);

/* Reads NUSE_RULES / NUSE_RULES_FILE (at load). */
void load_rules(void);

#pragma GCC visibility pop

#endif /* NUSE_DECIDE_H */
