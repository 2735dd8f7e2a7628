package soft

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Vectors with known ICRCs: a CNP captured from a ConnectX-4 Lx and a UC
// SEND ONLY, both from scapy's RoCE tests (test/contrib/roce.uts), and UC
// writes sent by rdma_rxe (Debian 6.1 kernel) in the guest test, captured
// on the TAP. The ICRC bytes are as they appear on the wire.
var icrcVectors = []struct{ name, pkt string }{
	{"rxe-write-only", "45000040aa47400040117a930ae800020ae80001f22c12b7002c00002a30ffff0010171300b10cf000007f0000020000004d83010000000167000000fc08aff8"},
	{"rxe-write-only-imm", "45000044aa48400040117a8e0ae800020ae80001f22c12b7003000002b30ffff0010171300b10cf100007f0000000000004d8301000000010000000196000000ea5f5f9c"},
	{"rxe-write-last-imm", "45000034aa5e400040117a880ae800020ae80001f22c12b7002000002930ffff0010171300b10d04009004017300000035b81e2a"},
	{"cx4-cnp", `45c2 003c 718c 4000 4011 9161 0a00 1101 0a00 1201
		0000 12b7 0028 0000
		8100 ffff 4000 0118 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000
		82fd 002a`},
	{"uc-send-only", `4501 0040 0478 4000 4011 b4d5 c0a8 0007 c0a8 0007
		c000 12b7 002c aca2
		2460 ffff 0000 00d3 00cf 1710
		4630 818b e289 35d9 0e9a 9550 5401 be88 5e50 0000
		78f3 53f3`},
}

func TestICRCVectors(t *testing.T) {
	for _, v := range icrcVectors {
		b := unhex(t, v.pkt)
		ip, udp, pl, err := SplitIPv4UDP(b)
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		if !VerifyICRC(ip, udp, pl) {
			t.Errorf("%s: ICRC %08x does not verify", v.name, ICRC(ip, udp, pl[:len(pl)-4]))
		}
		// Variant fields must not matter; invariant ones must.
		c := append([]byte(nil), b...)
		c[1], c[8], c[10], c[26], c[32] = 0x5a, 3, 0x12, 0x99, 0x40
		ip, udp, pl, _ = SplitIPv4UDP(c)
		if !VerifyICRC(ip, udp, pl) {
			t.Errorf("%s: masked fields changed the ICRC", v.name)
		}
		c[12] ^= 1 // source address
		if VerifyICRC(ip, udp, pl) {
			t.Errorf("%s: ICRC ignores the source address", v.name)
		}
	}
}

func TestSeed(t *testing.T) {
	// The RoCEv2 annex and rxe start from CRC state 0xdebb20e3; Go keeps
	// the complemented state.
	if icrcSeed != ^uint32(0xdebb20e3) {
		t.Fatalf("seed %08x", icrcSeed)
	}
}

func TestParseUCSendOnly(t *testing.T) {
	_, _, pl, _ := SplitIPv4UDP(unhex(t, icrcVectors[4].pkt))
	p, err := ParsePacket(pl)
	if err != nil {
		t.Fatal(err)
	}
	if p.Opcode != OpUCSendOnly || !p.M || p.PadCnt != 2 || p.PKey != 0xffff || p.DestQP != 211 || p.PSN != 13571856 || len(p.Payload) != 18 {
		t.Fatalf("parsed %+v", p)
	}
}

func TestRoundTrip(t *testing.T) {
	ip := make([]byte, IPv4Len)
	udp := make([]byte, UDPLen)
	for _, op := range []uint8{OpUCWriteFirst, OpUCWriteMiddle, OpUCWriteLast, OpUCWriteLastImm, OpUCWriteOnly, OpUCWriteOnlyImm} {
		for _, n := range []int{0, 1, 2, 3, 4, 255, 1024} {
			payload := bytes.Repeat([]byte{byte(n)}, n)
			in := Packet{BTH: BTH{Opcode: op, SE: true, PKey: DefaultPKey, DestQP: 0x123456, PSN: 0xabcdef},
				RETH: RETH{VA: 0x1122334455667788, RKey: 0x99aabbcc, DMALen: 4242}, Imm: 0xdeadbeef, Payload: payload}
			b := AppendPacket(nil, &in)
			if len(b)%4 != 0 {
				t.Fatalf("op %x n %d: length %d not a multiple of 4", op, n, len(b))
			}
			IPv4Header(ip, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, len(b))
			UDPHeader(udp, 4791, 4791, len(b))
			PutICRC(ip, udp, b)
			if !VerifyICRC(ip, udp, b) {
				t.Fatal("own ICRC does not verify")
			}
			out, err := ParsePacket(b)
			if err != nil {
				t.Fatalf("op %x n %d: %v", op, n, err)
			}
			info, _ := lookupOp(op)
			if out.Opcode != op || out.DestQP != in.DestQP || out.PSN != in.PSN || !out.SE || !bytes.Equal(out.Payload, payload) ||
				(info.reth && out.RETH != in.RETH) || (info.imm && out.Imm != in.Imm) {
				t.Fatalf("op %x n %d: got %+v", op, n, out)
			}
			if len(b) != HeaderLen(op)+n+int(out.PadCnt)+ICRCLen {
				t.Fatalf("op %x: length mismatch", op)
			}
		}
	}
}

func FuzzParsePacket(f *testing.F) {
	for _, v := range icrcVectors {
		_, _, pl, _ := SplitIPv4UDP(unhex(f, v.pkt))
		f.Add(pl)
	}
	f.Add(AppendPacket(nil, &Packet{BTH: BTH{Opcode: OpUCWriteOnlyImm}, Payload: []byte("hello")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to the same bytes (ICRC aside).
		out := AppendPacket(nil, &p)
		if len(out) != len(b) || !bytes.Equal(out[:len(out)-4], maskReserved(b[:len(b)-4], p)) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, out)
		}
	})
}

// maskReserved clears the BTH bits ParsePacket ignores (resv6, resv7) and
// the pad bytes, which AppendPacket writes as zero.
func maskReserved(b []byte, p Packet) []byte {
	c := append([]byte(nil), b...)
	c[4] &= 0xc0
	c[8] &= 0x80
	for i := len(c) - int(p.PadCnt); i < len(c); i++ {
		c[i] = 0
	}
	return c
}

func FuzzSplitIPv4UDP(f *testing.F) {
	for _, v := range icrcVectors {
		f.Add(unhex(f, v.pkt))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, udp, pl, err := SplitIPv4UDP(b)
		if err != nil {
			return
		}
		if len(ip) < IPv4Len || len(udp) != UDPLen || len(ip)+len(udp)+len(pl) > len(b) {
			t.Fatal("bad split")
		}
		VerifyICRC(ip, udp, pl)
	})
}
