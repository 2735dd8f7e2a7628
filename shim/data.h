/* SPDX-License-Identifier: Apache-2.0 */
/*
 * data.h - the data-path boundary: what the data interposers (ix_data.c,
 * and ioctl in ix_opts.c) call once they know an fd is NUSE's.  Today
 * every NUSE socket moves its bytes through one path, the stream path
 * (stream.c: TCP over the socket's byte rings, the daemon's engine on the
 * other side), so each function below is one inline call.
 *
 * Where new paths go (each is new files plus one case per function here;
 * the interposers do not change):
 *  - datagrams (UDP): dgram.h/dgram.c, message rings with per-message
 *    addresses.  socket() in ix_socket.c admits SOCK_DGRAM, ctl_request
 *    (session.c) asks the daemon for that type, and recvfrom/recvmsg get
 *    the source address from the path instead of clearing it.
 *  - the direct shared-memory path of the same-host "shm" engine:
 *    shm.h/shm.c, rings shared with the peer process, the daemon only
 *    brokering setup and wake-ups.
 * A socket's path is then a field of struct nsock (fdtab.h), set where the
 * daemon's reply attaches it to its slot (attach_slot, sockstate.c).
 */
#ifndef NUSE_DATA_H
#define NUSE_DATA_H

#include "stream.h"

#pragma GCC visibility push(hidden)

static inline ssize_t data_send(struct nsock *s, int fd, const struct iovec *iov, int cnt, int flags)
{
	return stream_send(s, fd, iov, cnt, flags);
}

static inline ssize_t data_recv(struct nsock *s, int fd, const struct iovec *iov, int cnt, int flags)
{
	return stream_recv(s, fd, iov, cnt, flags);
}

static inline ssize_t data_sendfile(struct nsock *s, int out, int in, off_t *off, size_t count)
{
	return stream_sendfile(s, out, in, off, count);
}

/* FIONREAD (rx) / TIOCOUTQ: bytes queued. */
static inline uint64_t data_queued(struct nsock *s, int rx)
{
	return stream_queued(s, rx);
}

#pragma GCC visibility pop

#endif /* NUSE_DATA_H */
