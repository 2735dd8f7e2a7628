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
#include <sys/mman.h>
#include <unistd.h>

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

/*
 * Rewinding: a producer that finds its ring empty, with the next byte at
 * least NUSE_RING_REWIND_AT bytes into it, writes what fits before that
 * point at the ring's start instead, having published skip (the count of
 * the ring's start) before head.  A light connection's bytes so stay in
 * the ring's first pages: warm, and few to hold.  The consumer starts
 * reading at nuse_ring_start (skip read after head).
 */
#define NUSE_RING_REWIND_AT (16u << 10)

/* Where the producer writes n bytes into an empty ring whose head is head. */
static inline uint64_t nuse_ring_rewind(uint64_t head, uint64_t size, uint64_t n)
{
	uint64_t off = head & (size - 1);

	return off >= NUSE_RING_REWIND_AT && n <= off ? head - off + size : head;
}

/* The consumer's first byte: tail, or skip if the producer rewound past it. */
static inline uint64_t nuse_ring_start(uint64_t head, uint64_t tail, uint64_t skip)
{
	return (int64_t)(skip - tail) > 0 && (int64_t)(head - skip) >= 0 ? skip : tail;
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

/*
 * Gives the pages of an empty ring back to the kernel, all but the one the
 * next byte goes to (pos): the ring is a shared file mapping, whose pages
 * stay once touched.  Only the producer may: the consumer reads [tail,
 * head) alone, and the rest is the producer's to write.  Pages the ring
 * only partly covers stay.
 */
static inline void nuse_ring_trim(uint8_t *data, uint64_t size, uint64_t pos)
{
	static uintptr_t pg;
	uintptr_t lo, hi, keep;

	if (!pg)
		pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	lo = ((uintptr_t)data + pg - 1) & ~(pg - 1);
	hi = ((uintptr_t)data + size) & ~(pg - 1);
	keep = ((uintptr_t)data + (pos & (size - 1))) & ~(pg - 1);
	if (keep > lo)
		madvise((void *)lo, keep - lo, MADV_REMOVE);
	if (keep + pg < hi)
		madvise((void *)(keep + pg), hi - keep - pg, MADV_REMOVE);
}

#endif /* NUSE_RING_H */
