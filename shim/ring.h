/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ring.h - the byte-ring copy logic of a NUSE socket ring (nuse_abi.h:
 * struct nuse_ring).  Head and tail are free-running byte counts; a byte's
 * position is count & (size - 1); size is a power of two.  These helpers
 * only copy and count; publishing head/tail (with release ordering) is the
 * caller's business.  Tested from Go through shim/ringtest.
 */
#ifndef NUSE_RING_H
#define NUSE_RING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Bytes the consumer can read. */
static inline uint64_t nuse_ring_used(uint64_t head, uint64_t tail)
{
	return head - tail;
}

/* Bytes the producer can write. */
static inline uint64_t nuse_ring_free(uint64_t head, uint64_t tail, uint64_t size)
{
	return size - (head - tail);
}

/* Counters a peer may have scribbled on: used bytes must lie in [0, size]. */
static inline int nuse_ring_sane(uint64_t head, uint64_t tail, uint64_t size)
{
	return head - tail <= size;
}

/* Copies n bytes from src into the ring at byte count pos, wrapping. */
static inline void nuse_ring_copy_in(uint8_t *data, uint64_t size, uint64_t pos, const void *src, size_t n)
{
	uint64_t off = pos & (size - 1);
	size_t first = n;

	if (first > size - off)
		first = (size_t)(size - off);
	memcpy(data + off, src, first);
	if (n > first)
		memcpy(data, (const uint8_t *)src + first, n - first);
}

/* Copies n bytes out of the ring at byte count pos into dst, wrapping. */
static inline void nuse_ring_copy_out(const uint8_t *data, uint64_t size, uint64_t pos, void *dst, size_t n)
{
	uint64_t off = pos & (size - 1);
	size_t first = n;

	if (first > size - off)
		first = (size_t)(size - off);
	memcpy(dst, data + off, first);
	if (n > first)
		memcpy((uint8_t *)dst + first, data, n - first);
}

#endif /* NUSE_RING_H */
