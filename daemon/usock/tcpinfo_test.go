package usock

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/nuse-project/nuse/shim/abi/cdefs"
	"github.com/nuse-project/nuse/stack"
)

func TestTCPInfoMatchesLinuxHeader(t *testing.T) {
	c := cdefs.TCPInfo()
	for name, off := range TCPInfoOffsets {
		cv, ok := c[name]
		if !ok {
			t.Errorf("%s: not in the C list", name)
			continue
		}
		if name == "sizeof" {
			// Older headers end earlier; the encoding must not be longer
			// than what a program compiled against them may expect, and
			// newer kernels' extra fields are simply not sent.
			if cv < off {
				t.Errorf("struct tcp_info is %d bytes here, the encoder writes %d", cv, off)
			}
			continue
		}
		if cv != off {
			t.Errorf("%s: linux/tcp.h says offset %d, the encoder uses %d", name, cv, off)
		}
	}
}

func TestEncodeTCPInfo(t *testing.T) {
	var b [300]byte
	for i := range b {
		b[i] = 0xee
	}
	n := encodeTCPInfo(b[:], stack.TCPInfo{State: 1, CAState: 4, RTT: 1500 * time.Microsecond, SndMSS: 1460,
		SndCwnd: 10, TotalRetrans: 3, SegsOut: 7, SegsIn: 9}, 5000, 6000, 42)
	le := binary.LittleEndian
	switch {
	case n != tcpInfoLen:
		t.Fatalf("length %d", n)
	case b[tiState] != 1 || b[tiCAState] != 4:
		t.Errorf("state %d ca %d", b[tiState], b[tiCAState])
	case le.Uint32(b[tiRTT:]) != 1500 || le.Uint32(b[tiSndMSS:]) != 1460 || le.Uint32(b[tiSndCwnd:]) != 10:
		t.Errorf("rtt %d mss %d cwnd %d", le.Uint32(b[tiRTT:]), le.Uint32(b[tiSndMSS:]), le.Uint32(b[tiSndCwnd:]))
	case le.Uint32(b[tiTotalRetrans:]) != 3 || le.Uint32(b[tiSegsOut:]) != 7 || le.Uint32(b[tiSegsIn:]) != 9:
		t.Errorf("retrans/segs wrong")
	case le.Uint64(b[tiBytesSent:]) != 5000 || le.Uint64(b[tiBytesRecv:]) != 6000 || le.Uint32(b[tiNotSent:]) != 42:
		t.Errorf("byte counts wrong")
	case b[tiBytesAcked] != 0:
		t.Errorf("bytes_acked is unknown and must stay 0")
	case b[tcpInfoLen] != 0xee:
		t.Errorf("wrote past the struct")
	}
}
