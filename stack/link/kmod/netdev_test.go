package kmod

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/nuse-project/nuse/stack/netdev"
)

func TestParseArg(t *testing.T) {
	for _, tc := range []struct {
		arg      string
		mtu      uint32
		name     string
		tso      bool
		slots    uint32
		slotSize uint32
		bad      bool
	}{
		{arg: "", mtu: 1500, name: "nuse0", tso: true, slots: 256, slotSize: MaxSlotSize},
		{arg: "nuse7", mtu: 1500, name: "nuse7", tso: true, slots: 256, slotSize: MaxSlotSize},
		{arg: "tso=off", mtu: 1500, name: "nuse0", tso: false},
		{arg: "tso=off", mtu: 65000, name: "nuse0", tso: false, slots: 256, slotSize: MaxSlotSize},
		{arg: "x%d,tso=on,slots=1024", mtu: 1500, name: "x%d", tso: true, slots: 1024, slotSize: MaxSlotSize},
		{arg: "slots=100", bad: true},
		{arg: "slots=8", bad: true},
		{arg: "tso=maybe", bad: true},
		{arg: "a/b", bad: true},
		{arg: "color=blue", bad: true},
	} {
		o, err := parseArg(netdev.Config{Arg: tc.arg, Name: "nuse0", MTU: tc.mtu})
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted", tc.arg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.arg, err)
			continue
		}
		if o.Name != tc.name || o.TSO != tc.tso || o.K2USlots != tc.slots || o.U2KSlots != tc.slots || o.SlotSize != tc.slotSize || o.MTU != tc.mtu {
			t.Errorf("%q: got %+v", tc.arg, o)
		}
	}
}

func TestNetdevKindWithoutModule(t *testing.T) {
	if DevicePresent() {
		t.Skip("/dev/nuse exists here")
	}
	_, err := netdev.Open("kmod", netdev.Config{Name: "nusek-x0", MTU: 1500, HostAddrs: []netip.Prefix{netip.MustParsePrefix("10.55.0.1/24")}})
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("err = %v, want ErrNoDevice", err)
	}
}
