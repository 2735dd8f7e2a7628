// Package ctlclient talks to a running daemon's control socket from tools
// (nuse stats, nuse run, tests).
package ctlclient

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"time"
	"unsafe"

	"github.com/nuse-project/nuse/daemon/usock"
	"github.com/nuse-project/nuse/shim/abi"
)

// Ping reports whether a daemon answers on path.
func Ping(path string) bool {
	c, err := net.DialTimeout("unixpacket", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// StatsJSON fetches the daemon's statistics as JSON text.
func StatsJSON(path string) ([]byte, error) {
	c, err := net.DialTimeout("unixpacket", path, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no NUSE daemon at %s (%v); start one with 'nuse daemon' or pass --sock", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	h := abi.CtlHdr{Magic: abi.Magic, Version: abi.Version, Type: abi.MsgStats, Len: uint32(unsafe.Sizeof(abi.CtlHdr{}))}
	if _, err := c.Write(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unsafe.Sizeof(h))); err != nil {
		return nil, err
	}
	buf := make([]byte, usock.StatsChunk)
	n, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("reading stats: %w", err)
	}
	if n != 8 {
		return nil, fmt.Errorf("daemon refused the stats query (%d-byte answer)", n)
	}
	total := binary.LittleEndian.Uint64(buf)
	if total > 64<<20 {
		return nil, fmt.Errorf("stats answer of %d bytes is implausible", total)
	}
	out := make([]byte, 0, total)
	for uint64(len(out)) < total {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("reading stats: %w", err)
		}
		out = append(out, buf[:n]...)
	}
	return out, nil
}

// Stats fetches and decodes the daemon's statistics.
func Stats(path string) (*usock.Stats, error) {
	b, err := StatsJSON(path)
	if err != nil {
		return nil, err
	}
	var st usock.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decoding stats: %w", err)
	}
	return &st, nil
}
