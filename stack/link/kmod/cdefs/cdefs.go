// Package cdefs exposes sizes, offsets and constants of kmod/nuse_uapi.h as
// the C compiler sees them, so the Go mirror in stack/link/kmod can be
// checked against the header the module is built with.
package cdefs

/*
#include <stddef.h>
#include "../../../../kmod/nuse_uapi.h"

#define F(T, f) { #T "." #f, offsetof(struct T, f) }
#define S(T) { #T, sizeof(struct T) }
struct nv { const char *name; unsigned long long v; };
static struct nv layout[] = {
	S(nuse_desc), F(nuse_desc, off), F(nuse_desc, len), F(nuse_desc, proto), F(nuse_desc, csum),
	F(nuse_desc, gso_type), F(nuse_desc, gso_size), F(nuse_desc, csum_start), F(nuse_desc, csum_offset),
	F(nuse_desc, flags), F(nuse_desc, reserved),
	S(nuse_ring_ctrl), F(nuse_ring_ctrl, prod), F(nuse_ring_ctrl, cons), F(nuse_ring_ctrl, flags),
	S(nuse_ctrl), F(nuse_ctrl, k2u), F(nuse_ctrl, u2k), F(nuse_ctrl, version), F(nuse_ctrl, err_bad_index),
	F(nuse_ctrl, err_bad_off), F(nuse_ctrl, err_bad_len), F(nuse_ctrl, err_bad_proto), F(nuse_ctrl, err_bad_csum),
	F(nuse_ctrl, err_nomem), F(nuse_ctrl, k2u_full), F(nuse_ctrl, k2u_too_big),
	S(nuse_setup), F(nuse_setup, version), F(nuse_setup, flags), F(nuse_setup, name), F(nuse_setup, mtu),
	F(nuse_setup, k2u_slots), F(nuse_setup, u2k_slots), F(nuse_setup, slot_size), F(nuse_setup, ifindex),
	F(nuse_setup, desc_size), F(nuse_setup, mmap_size), F(nuse_setup, k2u_desc_off), F(nuse_setup, u2k_desc_off),
	F(nuse_setup, k2u_buf_off), F(nuse_setup, u2k_buf_off), F(nuse_setup, reserved),
};
static struct nv consts[] = {
	{"VERSION", NUSE_UAPI_VERSION}, {"F_PERSIST", NUSE_F_PERSIST}, {"F_TSO", NUSE_F_TSO},
	{"GSO_NONE", NUSE_GSO_NONE}, {"GSO_TCPV4", NUSE_GSO_TCPV4}, {"GSO_TCPV6", NUSE_GSO_TCPV6},
	{"CSUM_NONE", NUSE_CSUM_NONE}, {"CSUM_UNNECESSARY", NUSE_CSUM_UNNECESSARY}, {"CSUM_PARTIAL", NUSE_CSUM_PARTIAL},
	{"RING_NEED_KICK", NUSE_RING_NEED_KICK}, {"MIN_SLOTS", NUSE_MIN_SLOTS}, {"MAX_SLOTS", NUSE_MAX_SLOTS},
	{"MIN_SLOT_SIZE", NUSE_MIN_SLOT_SIZE}, {"MAX_SLOT_SIZE", NUSE_MAX_SLOT_SIZE},
	{"IOC_CREATE", NUSE_IOC_CREATE}, {"IOC_KICK", NUSE_IOC_KICK}, {"IOC_SET_PERSIST", NUSE_IOC_SET_PERSIST},
};
static size_t layout_n(void) { return sizeof(layout) / sizeof(layout[0]); }
static const char *layout_name(size_t i) { return layout[i].name; }
static unsigned long long layout_v(size_t i) { return layout[i].v; }
static size_t consts_n(void) { return sizeof(consts) / sizeof(consts[0]); }
static const char *consts_name(size_t i) { return consts[i].name; }
static unsigned long long consts_v(size_t i) { return consts[i].v; }
*/
import "C"

// Layout maps "struct" and "struct.field" to sizeof and offsetof.
func Layout() map[string]uint64 {
	m := map[string]uint64{}
	for i := C.size_t(0); i < C.layout_n(); i++ {
		m[C.GoString(C.layout_name(i))] = uint64(C.layout_v(i))
	}
	return m
}

// Consts maps constant names (without NUSE_) to their values.
func Consts() map[string]uint64 {
	m := map[string]uint64{}
	for i := C.size_t(0); i < C.consts_n(); i++ {
		m[C.GoString(C.consts_name(i))] = uint64(C.consts_v(i))
	}
	return m
}
