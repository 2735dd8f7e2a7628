/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream.h - the stream data path: TCP bytes through the socket's rx and
 * tx rings in the arena, the daemon's engine on the other side.
 * Implemented by stream.c.  The interposers reach it through data.h.
 */
#ifndef NUSE_STREAM_H
#define NUSE_STREAM_H

#include "direct.h"
#include "sockstate.h"

#pragma GCC visibility push(hidden)

/* send/sendmsg/write/writev: the libc result (count, or -1 with errno). */
ssize_t stream_send(struct nsock *s, int fd, const struct iovec *iov, int cnt, int flags);
/* recv/recvmsg/read/readv: the libc result (count, 0 at EOF, or -1 with errno). */
ssize_t stream_recv(struct nsock *s, int fd, const struct iovec *iov, int cnt, int flags);
/* sendfile() to a NUSE socket: the file is read straight into the tx ring
 * (at the offset given, or at the file's position, which then moves). */
ssize_t stream_sendfile(struct nsock *s, int out, int in, off_t *off, size_t count);

/* Bytes queued: in the rx ring (rx, FIONREAD) or in the tx ring (TIOCOUTQ). */
static inline uint64_t stream_queued(struct nsock *s, int rx)
{
	uint64_t n;

	direct_map(s);
	if (rx) {
		uint64_t head = atomic_load(A64(&s->rx->head));

		n = head - nuse_ring_start(head, s->rx->tail, atomic_load(A64(&s->rx->skip)));
	} else {
		n = s->tx->head - atomic_load(A64(&s->tx->tail)); /* a skip counts until taken */
	}
	return n <= s->ring_size ? n : 0; /* a peer's bogus counters */
}

#pragma GCC visibility pop

#endif /* NUSE_STREAM_H */
