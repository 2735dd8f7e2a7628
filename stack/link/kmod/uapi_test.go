package kmod

import (
	"testing"
	"unsafe"

	"github.com/nuse-project/nuse/stack/link/kmod/cdefs"
)

func TestLayoutMatchesHeader(t *testing.T) {
	var (
		d  Desc
		rc RingCtrl
		c  Ctrl
		s  Setup
	)
	goLayout := map[string]uintptr{
		"nuse_desc": unsafe.Sizeof(d), "nuse_desc.off": unsafe.Offsetof(d.Off), "nuse_desc.len": unsafe.Offsetof(d.Len),
		"nuse_desc.proto": unsafe.Offsetof(d.Proto), "nuse_desc.csum": unsafe.Offsetof(d.Csum),
		"nuse_desc.gso_type": unsafe.Offsetof(d.GSOType), "nuse_desc.gso_size": unsafe.Offsetof(d.GSOSize),
		"nuse_desc.csum_start": unsafe.Offsetof(d.CsumStart), "nuse_desc.csum_offset": unsafe.Offsetof(d.CsumOffset),
		"nuse_desc.flags": unsafe.Offsetof(d.Flags), "nuse_desc.reserved": unsafe.Offsetof(d.Reserved),
		"nuse_ring_ctrl": unsafe.Sizeof(rc), "nuse_ring_ctrl.prod": unsafe.Offsetof(rc.Prod),
		"nuse_ring_ctrl.cons": unsafe.Offsetof(rc.Cons), "nuse_ring_ctrl.flags": unsafe.Offsetof(rc.Flags),
		"nuse_ctrl": unsafe.Sizeof(c), "nuse_ctrl.k2u": unsafe.Offsetof(c.K2U), "nuse_ctrl.u2k": unsafe.Offsetof(c.U2K),
		"nuse_ctrl.version": unsafe.Offsetof(c.Version), "nuse_ctrl.err_bad_index": unsafe.Offsetof(c.ErrBadIndex),
		"nuse_ctrl.err_bad_off": unsafe.Offsetof(c.ErrBadOff), "nuse_ctrl.err_bad_len": unsafe.Offsetof(c.ErrBadLen),
		"nuse_ctrl.err_bad_proto": unsafe.Offsetof(c.ErrBadProto), "nuse_ctrl.err_bad_csum": unsafe.Offsetof(c.ErrBadCsum),
		"nuse_ctrl.err_nomem": unsafe.Offsetof(c.ErrNomem), "nuse_ctrl.k2u_full": unsafe.Offsetof(c.K2UFull),
		"nuse_ctrl.k2u_too_big": unsafe.Offsetof(c.K2UTooBig),
		"nuse_setup":            unsafe.Sizeof(s), "nuse_setup.version": unsafe.Offsetof(s.Version), "nuse_setup.flags": unsafe.Offsetof(s.Flags),
		"nuse_setup.name": unsafe.Offsetof(s.Name), "nuse_setup.mtu": unsafe.Offsetof(s.MTU),
		"nuse_setup.k2u_slots": unsafe.Offsetof(s.K2USlots), "nuse_setup.u2k_slots": unsafe.Offsetof(s.U2KSlots),
		"nuse_setup.slot_size": unsafe.Offsetof(s.SlotSize), "nuse_setup.ifindex": unsafe.Offsetof(s.Ifindex),
		"nuse_setup.desc_size": unsafe.Offsetof(s.DescSize), "nuse_setup.mmap_size": unsafe.Offsetof(s.MmapSize),
		"nuse_setup.k2u_desc_off": unsafe.Offsetof(s.K2UDescOff), "nuse_setup.u2k_desc_off": unsafe.Offsetof(s.U2KDescOff),
		"nuse_setup.k2u_buf_off": unsafe.Offsetof(s.K2UBufOff), "nuse_setup.u2k_buf_off": unsafe.Offsetof(s.U2KBufOff),
		"nuse_setup.reserved": unsafe.Offsetof(s.Reserved),
	}
	cl := cdefs.Layout()
	if len(cl) != len(goLayout) {
		t.Errorf("C lists %d layout entries, Go %d", len(cl), len(goLayout))
	}
	for name, cv := range cl {
		gv, ok := goLayout[name]
		if !ok {
			t.Errorf("%s: in the header, not in the Go mirror", name)
			continue
		}
		if uint64(gv) != cv {
			t.Errorf("%s: C %d, Go %d", name, cv, gv)
		}
	}
	goConsts := map[string]uint64{
		"VERSION": UAPIVersion, "F_PERSIST": FlagPersist, "F_TSO": FlagTSO,
		"GSO_NONE": GSONone, "GSO_TCPV4": GSOTCPv4, "GSO_TCPV6": GSOTCPv6, "CSUM_NONE": CsumNone,
		"CSUM_UNNECESSARY": CsumUnnecessary, "CSUM_PARTIAL": CsumPartial, "RING_NEED_KICK": RingNeedKick,
		"MIN_SLOTS": MinSlots, "MAX_SLOTS": MaxSlots, "MIN_SLOT_SIZE": MinSlotSize, "MAX_SLOT_SIZE": MaxSlotSize,
		"IOC_CREATE": iocCreate, "IOC_KICK": iocKick, "IOC_SET_PERSIST": iocSetPersist,
	}
	cc := cdefs.Consts()
	if len(cc) != len(goConsts) {
		t.Errorf("C lists %d constants, Go %d", len(cc), len(goConsts))
	}
	for name, cv := range cc {
		if gv, ok := goConsts[name]; !ok || gv != cv {
			t.Errorf("NUSE_%s: C %#x, Go %#x (known %v)", name, cv, gv, ok)
		}
	}
}
