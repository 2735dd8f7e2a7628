package usock

import (
	"encoding/binary"
	"time"

	"github.com/nuse-project/nuse/stack"
)

// tcpInfoLen is sizeof(struct tcp_info) in the Linux UAPI this encodes
// (through tcpi_snd_wnd); getsockopt copies min(caller's size, this).
const tcpInfoLen = 232

// Offsets in struct tcp_info (linux/tcp.h); cdefs checks them against the
// header in shim/abi's tests.
const (
	tiState        = 0
	tiCAState      = 1
	tiRTO          = 8
	tiSndMSS       = 16
	tiRcvMSS       = 20
	tiUnacked      = 24
	tiPMTU         = 60
	tiRTT          = 68
	tiRTTVar       = 72
	tiSndSsthresh  = 76
	tiSndCwnd      = 80
	tiAdvMSS       = 84
	tiReordering   = 88
	tiTotalRetrans = 100
	tiBytesAcked   = 120
	tiBytesRecv    = 128
	tiSegsOut      = 136
	tiSegsIn       = 140
	tiNotSent      = 144
	tiBytesSent    = 200
)

// TCPInfoOffsets lists the encoder's offsets by field name, for the test
// that compares them with the C header.
var TCPInfoOffsets = map[string]uintptr{
	"tcpi_state": tiState, "tcpi_ca_state": tiCAState, "tcpi_rto": tiRTO, "tcpi_snd_mss": tiSndMSS,
	"tcpi_rcv_mss": tiRcvMSS, "tcpi_unacked": tiUnacked, "tcpi_pmtu": tiPMTU, "tcpi_rtt": tiRTT,
	"tcpi_rttvar": tiRTTVar, "tcpi_snd_ssthresh": tiSndSsthresh, "tcpi_snd_cwnd": tiSndCwnd,
	"tcpi_advmss": tiAdvMSS, "tcpi_reordering": tiReordering, "tcpi_total_retrans": tiTotalRetrans,
	"tcpi_bytes_acked": tiBytesAcked, "tcpi_bytes_received": tiBytesRecv, "tcpi_segs_out": tiSegsOut,
	"tcpi_segs_in": tiSegsIn, "tcpi_notsent_bytes": tiNotSent, "tcpi_bytes_sent": tiBytesSent,
	"sizeof": tcpInfoLen,
}

// encodeTCPInfo writes a struct tcp_info into dst (at least tcpInfoLen
// bytes): what the engine knows, plus the daemon's byte counts. Fields
// nobody knows (bytes_acked, pacing, ...) stay zero.
func encodeTCPInfo(dst []byte, in stack.TCPInfo, sent, received, notSent uint64) int {
	b := dst[:tcpInfoLen]
	clear(b)
	le := binary.LittleEndian
	us := func(d time.Duration) uint32 { return uint32(d / time.Microsecond) }
	b[tiState] = in.State
	b[tiCAState] = in.CAState
	le.PutUint32(b[tiRTO:], us(in.RTO))
	le.PutUint32(b[tiSndMSS:], in.SndMSS)
	le.PutUint32(b[tiRcvMSS:], in.SndMSS)
	le.PutUint32(b[tiAdvMSS:], in.SndMSS)
	le.PutUint32(b[tiRTT:], us(in.RTT))
	le.PutUint32(b[tiRTTVar:], us(in.RTTVar))
	le.PutUint32(b[tiSndSsthresh:], in.SndSsthresh)
	le.PutUint32(b[tiSndCwnd:], in.SndCwnd)
	reord := uint32(3) // Linux's default tcp_reordering
	if in.Reordering {
		reord++
	}
	le.PutUint32(b[tiReordering:], reord)
	le.PutUint32(b[tiTotalRetrans:], in.TotalRetrans)
	le.PutUint64(b[tiBytesRecv:], received)
	le.PutUint32(b[tiSegsOut:], in.SegsOut)
	le.PutUint32(b[tiSegsIn:], in.SegsIn)
	le.PutUint32(b[tiNotSent:], uint32(min(notSent, 1<<32-1)))
	le.PutUint64(b[tiBytesSent:], sent)
	return tcpInfoLen
}
