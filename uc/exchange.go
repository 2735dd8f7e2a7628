package uc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// paramsMagic starts every exchanged record, so a stray client fails fast.
const paramsMagic = 0x4e554331 // "NUC1"

// ParamsLen is the size of an encoded ConnParams.
const ParamsLen = 4 + 4 + 4 + 16 + 4 + 8 + 8 + 4 + 8

// MarshalBinary encodes p in the fixed big-endian side-channel format.
func (p ConnParams) MarshalBinary() ([]byte, error) {
	b := make([]byte, ParamsLen)
	binary.BigEndian.PutUint32(b[0:], paramsMagic)
	binary.BigEndian.PutUint32(b[4:], p.QPN)
	binary.BigEndian.PutUint32(b[8:], p.PSN)
	copy(b[12:28], p.GID[:])
	binary.BigEndian.PutUint32(b[28:], p.RKey)
	binary.BigEndian.PutUint64(b[32:], p.Addr)
	binary.BigEndian.PutUint64(b[40:], p.Len)
	binary.BigEndian.PutUint32(b[48:], p.MTU)
	binary.BigEndian.PutUint64(b[52:], p.Extra)
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (p *ConnParams) UnmarshalBinary(b []byte) error {
	if len(b) != ParamsLen || binary.BigEndian.Uint32(b) != paramsMagic {
		return errors.New("uc: bad connection parameters record")
	}
	p.QPN = binary.BigEndian.Uint32(b[4:]) & 0xffffff
	p.PSN = binary.BigEndian.Uint32(b[8:]) & 0xffffff
	copy(p.GID[:], b[12:28])
	p.RKey = binary.BigEndian.Uint32(b[28:])
	p.Addr = binary.BigEndian.Uint64(b[32:])
	p.Len = binary.BigEndian.Uint64(b[40:])
	p.MTU = binary.BigEndian.Uint32(b[48:])
	p.Extra = binary.BigEndian.Uint64(b[52:])
	return nil
}

// Exchange sends local over c and returns the peer's parameters. Both sides
// call it; it is symmetric.
func Exchange(c net.Conn, local ConnParams, timeout time.Duration) (ConnParams, error) {
	var remote ConnParams
	if timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(timeout))
		defer c.SetDeadline(time.Time{})
	}
	b, _ := local.MarshalBinary()
	errc := make(chan error, 1)
	go func() { _, err := c.Write(b); errc <- err }()
	rb := make([]byte, ParamsLen)
	if _, err := io.ReadFull(c, rb); err != nil {
		return remote, fmt.Errorf("uc: reading peer parameters: %w", err)
	}
	if err := <-errc; err != nil {
		return remote, fmt.Errorf("uc: sending parameters: %w", err)
	}
	return remote, remote.UnmarshalBinary(rb)
}

// Sync is a one-byte barrier over the side channel: both sides call it
// after Connect so neither writes before the other is ready to receive.
func Sync(c net.Conn, timeout time.Duration) error {
	if timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(timeout))
		defer c.SetDeadline(time.Time{})
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Write([]byte{'s'}); errc <- err }()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	return <-errc
}

// MinMTU is the path MTU both sides can use.
func MinMTU(a, b uint32) uint32 {
	if b != 0 && b < a || a == 0 {
		return b
	}
	return a
}
