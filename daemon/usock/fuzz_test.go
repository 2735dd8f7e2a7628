package usock

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/nuse-project/nuse/shim/abi"
)

// FuzzDecodeCtl: control messages come from any local process.
func FuzzDecodeCtl(f *testing.F) {
	var h abi.CtlHello
	h.Hdr = hdr(abi.MsgHello, 1, int(unsafe.Sizeof(h)))
	f.Add(append([]byte(nil), bytesOf(&h)...))
	var r abi.CtlReq
	r.Hdr = hdr(abi.MsgSocket, 2, int(unsafe.Sizeof(r)))
	f.Add(append([]byte(nil), bytesOf(&r)...))
	// Engine names: good, unterminated, bytes after the NUL, bad bytes.
	for _, e := range []string{"kernel", "gvisor", "abcdefghijklmno", "abcdefghijklmnop", "shm\x00x", "GVISOR", "a b", "\xff"} {
		r.Engine = [abi.EngineLen]byte{}
		copy(r.Engine[:], e)
		f.Add(append([]byte(nil), bytesOf(&r)...))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeCtl(b)
		if err == nil && int(binary.LittleEndian.Uint32(b[8:])) != len(b) {
			t.Fatalf("accepted a message whose length field lies: %+v", m)
		}
		_ = commString(m.hello.Comm)
		if err == nil && (m.typ == abi.MsgSocket || m.typ == abi.MsgAccept) {
			// What is accepted is a name the rules could have written.
			if len(m.engine) > abi.EngineLen-1 || strings.Trim(m.engine, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
				t.Fatalf("accepted engine name %q", m.engine)
			}
			if n, _ := engineName(m.req.Engine); n != m.engine {
				t.Fatalf("engine %q, field says %q", m.engine, n)
			}
		}
	})
}

// FuzzSockaddr: addresses come from the command slots.
func FuzzSockaddr(f *testing.F) {
	f.Add(sockaddr(syscall.AF_INET, netip.MustParseAddrPort("10.77.0.2:80")), true)
	f.Add(sockaddr(syscall.AF_INET6, netip.MustParseAddrPort("[fd77::2]:443")), false)
	f.Fuzz(func(t *testing.T, b []byte, v4 bool) {
		fam := syscall.AF_INET6
		if v4 {
			fam = syscall.AF_INET
		}
		ap, err := parseSockaddr(b, fam)
		if err != nil {
			return
		}
		// What we accept, we can write back and read again identically.
		out := make([]byte, abi.AddrLen)
		n := putSockaddr(out, fam, ap)
		ap2, err := parseSockaddr(out[:n], fam)
		if err != nil || ap2 != ap {
			t.Fatalf("round trip %v -> %v (%v)", ap, ap2, err)
		}
	})
}

// FuzzCommand posts arbitrary command slots to a live daemon session: every
// one must get an answer, and the daemon must survive.
func FuzzCommand(f *testing.F) {
	_, path := startServer(f, 16<<10)
	cl := dialClient(f, path)
	s := cl.socket(syscall.AF_INET)
	f.Add(uint16(abi.OpBind), uint32(0), uint32(0), uint32(0), sockaddr(syscall.AF_INET, netip.MustParseAddrPort("127.0.0.1:0")), []byte{})
	f.Add(uint16(abi.OpSetsockopt), uint32(0), uint32(solSocket), uint32(soLinger), []byte{}, []byte{1, 0, 0, 0, 5, 0, 0, 0})
	f.Add(uint16(abi.OpGetsockopt), uint32(0), uint32(ipprotoTCP), uint32(tcpMaxSeg), []byte{}, []byte{0, 0, 0, 0})
	f.Add(uint16(abi.OpConnect), uint32(0), uint32(0), uint32(0), []byte{10, 0, 0, 80, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, op uint16, slotDelta, arg0, arg1 uint32, addr, opt []byte) {
		target := &testSock{slot: s.slot + slotDelta%3, gen: s.gen, family: syscall.AF_INET}
		if op == abi.OpClose || op == abi.OpListen {
			op = abi.OpGetsockname // keep the fuzzed socket usable
		}
		res, out := cl.cmd(target, op, arg0, arg1, addr, opt)
		// Only TCP_INFO answers with a length (of what it wrote to the
		// socket's info area); everything else is 0 or -errno.
		if tcpInfoAsked := op == abi.OpGetsockopt && arg0 == ipprotoTCP && arg1 == tcpInfo; res > 0 && (!tcpInfoAsked || res != tcpInfoLen) {
			t.Fatalf("positive result %d (op %d, %d/%d)", res, op, arg0, arg1)
		}
		if out.AddrLen > abi.AddrLen || out.OptLen > abi.OptLen {
			t.Fatalf("output lengths %d %d", out.AddrLen, out.OptLen)
		}
	})
}

func TestEngineNameChecks(t *testing.T) {
	for _, c := range []struct {
		field string
		ok    bool
	}{
		{"", true}, {"kernel", true}, {"my_eng-2", true}, {"abcdefghijklmno", true},
		{"abcdefghijklmnop", false}, // no NUL within the field
		{"shm\x00x", false},         // bytes after the NUL
		{"Kernel", false}, {"a b", false}, {"a/b", false}, {"\xff", false}, {"a\n", false},
	} {
		var f [abi.EngineLen]byte
		copy(f[:], c.field)
		name, err := engineName(f)
		if (err == nil) != c.ok || (c.ok && name != c.field) {
			t.Errorf("engineName(%q) = %q, %v; want ok %v", c.field, name, err, c.ok)
		}
		if err != nil && !errors.Is(err, errBadCtl) {
			t.Errorf("engineName(%q): %v is not a malformed-message error", c.field, err)
		}
	}
}
