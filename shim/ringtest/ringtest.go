// Package ringtest exposes the shim's byte-ring helpers (shim/ring.h) to Go
// so that the copy logic libnuse.so runs is tested, wrap-around included.
// (Tests can't use cgo directly, hence this small non-test package.)
package ringtest

/*
#include <stdlib.h>
#include "../ring.h"
*/
import "C"

import "unsafe"

// Ring is a byte ring in C memory, as in the arena.
type Ring struct {
	data             *C.uint8_t
	Size             uint64
	Head, Tail, Skip uint64
}

// New makes a ring of size bytes (a power of two).
func New(size uint64) *Ring {
	return &Ring{data: (*C.uint8_t)(C.calloc(C.size_t(size), 1)), Size: size}
}

// Free releases the ring's memory.
func (r *Ring) Free() { C.free(unsafe.Pointer(r.data)) }

// Used is the number of bytes a consumer can read.
func (r *Ring) Used() uint64 { return uint64(C.nuse_ring_used(C.uint64_t(r.Head), C.uint64_t(r.Tail))) }

// FreeSpace is the number of bytes a producer can write.
func (r *Ring) FreeSpace() uint64 {
	return uint64(C.nuse_ring_free(C.uint64_t(r.Head), C.uint64_t(r.Tail), C.uint64_t(r.Size)))
}

// Sane reports whether head and tail are consistent.
func (r *Ring) Sane() bool {
	return C.nuse_ring_sane(C.uint64_t(r.Head), C.uint64_t(r.Tail), C.uint64_t(r.Size)) != 0
}

// Write copies as much of p as fits and advances Head, like the shim's send.
func (r *Ring) Write(p []byte) int {
	n := uint64(len(p))
	if f := r.FreeSpace(); n > f {
		n = f
	}
	if n > 0 {
		C.nuse_ring_copy_in(r.data, C.uint64_t(r.Size), C.uint64_t(r.Head), unsafe.Pointer(&p[0]), C.size_t(n))
	}
	r.Head += n
	return int(n)
}

// Read copies out up to len(p) bytes and advances Tail unless peek.
func (r *Ring) Read(p []byte, peek bool) int {
	n := uint64(len(p))
	if u := r.Used(); n > u {
		n = u
	}
	if n > 0 {
		C.nuse_ring_copy_out(r.data, C.uint64_t(r.Size), C.uint64_t(r.Tail), unsafe.Pointer(&p[0]), C.size_t(n))
	}
	if !peek {
		r.Tail += n
	}
	return int(n)
}

// Raw is a copy of the ring's memory, for checking where bytes landed.
func (r *Ring) Raw() []byte { return C.GoBytes(unsafe.Pointer(r.data), C.int(r.Size)) }

// Trim runs nuse_ring_trim on the size-byte ring at mem[off:], a shared
// mapping, for a next byte at count pos.
func Trim(mem []byte, off, size, pos uint64) {
	C.nuse_ring_trim((*C.uint8_t)(unsafe.Pointer(&mem[off])), C.uint64_t(size), C.uint64_t(pos))
}

// RewindAt is NUSE_RING_REWIND_AT.
const RewindAt = C.NUSE_RING_REWIND_AT

// WriteRewind is Write as the shim's send does it: an empty ring is
// rewound (nuse_ring_rewind) when p fits before its head's place.
func (r *Ring) WriteRewind(p []byte) int {
	if r.Head == r.Tail {
		if h := uint64(C.nuse_ring_rewind(C.uint64_t(r.Head), C.uint64_t(r.Size), C.uint64_t(len(p)))); h != r.Head {
			r.Skip, r.Head = h, h
		}
	}
	return r.Write(p)
}

// ReadSkip is Read as the shim's recv does it, from nuse_ring_start.
func (r *Ring) ReadSkip(p []byte) int {
	r.Tail = uint64(C.nuse_ring_start(C.uint64_t(r.Head), C.uint64_t(r.Tail), C.uint64_t(r.Skip)))
	return r.Read(p, false)
}

// Start is nuse_ring_start.
func Start(head, tail, skip uint64) uint64 {
	return uint64(C.nuse_ring_start(C.uint64_t(head), C.uint64_t(tail), C.uint64_t(skip)))
}
