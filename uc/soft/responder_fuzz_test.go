package soft

import (
	"testing"

	"github.com/nuse-project/nuse/uc"
)

// FuzzResponder feeds arbitrary UC packets (sequences of them, split from
// the input) to a connected QP's responder: it must never panic or write
// outside the registered region, and completions must be consistent.
func FuzzResponder(f *testing.F) {
	seed := AppendPacket(nil, &Packet{BTH: BTH{Opcode: OpUCWriteOnlyImm, PKey: DefaultPKey, PSN: 5},
		RETH: RETH{VA: 0x7f0000000000, RKey: 1, DMALen: 4}, Payload: []byte("abcd")})
	f.Add(seed, uint8(1))
	f.Add(append(append([]byte{}, seed...), seed...), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, nsplit uint8) {
		d := &Device{mrs: map[uint32]*memRegion{}, qps: map[uint32]*QP{}, nextVA: 0x7f0000000000}
		buf := make([]byte, 4096)
		guard := make([]byte, 64)
		full := append(buf, guard...)
		mr, _ := d.RegMR(full[:4096:4096], uc.AccessRemoteWrite)
		_ = mr
		q := &QP{d: d, qpn: 7, cfg: uc.QPConfig{PathMTU: 256, RecvDepth: 8}, recvNote: make(chan struct{}, 1), sendNote: make(chan struct{}, 1)}
		q.connected, q.mtu, q.expPSN, q.remoteIP = true, 256, 5, [4]byte{1, 2, 3, 4}
		for i := 0; i < 8; i++ {
			q.recvWRs = append(q.recvWRs, uint64(i))
		}
		parts := int(nsplit%8) + 1
		step := len(in)/parts + 1
		for off := 0; off < len(in); off += step {
			p, err := ParsePacket(in[off:min(len(in), off+step)])
			if err != nil {
				continue
			}
			q.receive(&p, [4]byte{1, 2, 3, 4})
		}
		for _, b := range full[4096:] {
			if b != 0 {
				t.Fatal("write beyond the memory region")
			}
		}
		for _, wc := range q.recvCQ {
			if wc.ByteLen > 4096 || wc.Opcode != uc.WCRecvRDMAWithImm {
				t.Fatalf("bad completion %+v", wc)
			}
		}
	})
}
