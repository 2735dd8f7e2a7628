/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xfer.h - the data calls made of several moves, built on the data path
 * (data.h) with Linux's semantics: sendmmsg and recvmmsg (a send or recv
 * per message), splice between a NUSE socket and a pipe (either way,
 * through a bounded buffer and a scratch pipe, so that no byte is taken
 * from one side that the other did not take), and dprintf (formatted, then
 * sent).  Implemented by xfer.c; the interposers in ix_more.c call it once
 * they know the fd is NUSE's and the arguments are sound.
 */
#ifndef NUSE_XFER_H
#define NUSE_XFER_H

#include "data.h"

#pragma GCC visibility push(hidden)

/* The libc results: a count, or -1 with errno. */
int xfer_sendmmsg(struct nsock *s, int fd, struct mmsghdr *v, unsigned int n, int flags);
int xfer_recvmmsg(struct nsock *s, int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *t);
/* splice(pipe -> socket s) and splice(socket s -> pipe). */
ssize_t xfer_splice_to(struct nsock *s, int fd, int pipe_in, size_t len, unsigned int flags);
ssize_t xfer_splice_from(struct nsock *s, int fd, int pipe_out, size_t len, unsigned int flags);
/* vdprintf (chk < 0) or __vdprintf_chk (chk: its flag). */
int xfer_vdprintf(struct nsock *s, int fd, int chk, const char *fmt, va_list ap);

#pragma GCC visibility pop

#endif /* NUSE_XFER_H */
