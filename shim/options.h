/* SPDX-License-Identifier: Apache-2.0 */
/*
 * options.h - a NUSE socket's options: setsockopt/getsockopt once the
 * socket lives in the daemon.  Implemented by options.c.  nuse_setopt
 * returns 0 or -errno (the decision's replay chains it); the others return
 * the libc result.
 */
#ifndef NUSE_OPTIONS_H
#define NUSE_OPTIONS_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

int nuse_setopt(struct nsock *s, int level, int name, const void *val, socklen_t len);
int nuse_getsockopt(struct nsock *s, int fd, int level, int name, void *val, socklen_t *len);
/* SO_ACCEPTCONN: s listens (queue-size ioctls then fail with EINVAL). */
int nuse_listener(struct nsock *s);
/* SO_BINDTODEVICE's answer: the NUSE device's name (val, len not NULL). */
int put_dev(void *val, socklen_t *len);

#pragma GCC visibility pop

#endif /* NUSE_OPTIONS_H */
