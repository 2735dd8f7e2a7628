// Command ucxchg checks one UC QP pair end to end, for any pair of
// backends (soft<->soft, verbs<->verbs, soft<->verbs): the dialing side
// sends an RDMA WRITE and then a WRITE WITH IMMEDIATE of a size-varying
// pattern; the listener checks the completion (immediate, length) and both
// payloads, then answers the same way; the dialer checks the answer. Every
// wait is bounded. Prints "ucxchg: OK n rounds" or exits non-zero.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nuse-project/nuse/uc"
	_ "github.com/nuse-project/nuse/uc/proxy" // -via-daemon
	_ "github.com/nuse-project/nuse/uc/soft"
)

var sizes = []int{1, 2, 7, 64, 255, 256, 1000, 1023, 1024, 1025, 2048, 4095, 4096, 4097, 9000, 65536, 100000}

const (
	bufLen  = 256 << 10
	plainAt = 128 << 10 // where the plain WRITE goes
)

func pattern(round, size int, side byte) []byte {
	b := make([]byte, size)
	x := uint32(round*2654435761) ^ uint32(side)<<24 ^ uint32(size)
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func main() {
	backend := flag.String("backend", "soft", "soft or verbs")
	dev := flag.String("dev", "", "verbs device")
	gid := flag.Int("gid", 1, "verbs GID index")
	local := flag.String("local", "", "soft: local IPv4 (default: from the side channel)")
	listen := flag.String("listen", "", "wait for the peer on ADDR:PORT")
	peer := flag.String("peer", "", "dial the peer at HOST:PORT")
	rounds := flag.Int("n", 3*len(sizes), "rounds")
	mtu := flag.Int("mtu", 1024, "path MTU")
	wait := flag.Duration("wait", 120*time.Second, "how long to wait for the peer to appear")
	viaDaemon := flag.String("via-daemon", "", "post through the NUSE daemon on this control socket, which opens -backend")
	doorbell := flag.Bool("doorbell", false, "verbs: ring the send doorbell after every post and while waiting (rings that were not needed must be harmless)")
	flag.Parse()
	opts := uc.Options{Dev: *dev, GIDIndex: *gid, LocalIP: *local}
	if *viaDaemon != "" {
		opts.Via, opts.Daemon, *backend = *backend, *viaDaemon, "daemon"
	}
	if err := run(*backend, opts, *listen, *peer, *rounds, *mtu, *wait, *doorbell); err != nil {
		fmt.Fprintln(os.Stderr, "ucxchg:", err)
		os.Exit(1)
	}
}

// doorbeller is the verbs backend's QP: its stall watch and doorbell.
type doorbeller interface {
	Doorbell() error
	Kicks() uint64
}

func run(backend string, opts uc.Options, listen, peer string, rounds, mtu int, wait time.Duration, doorbell bool) error {
	var conn net.Conn
	var err error
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(wait))
		conn, err = ln.Accept()
		ln.Close()
		if err != nil {
			return err
		}
	} else {
		deadline := time.Now().Add(wait)
		for {
			if conn, err = net.DialTimeout("tcp", peer, time.Second); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	defer conn.Close()
	if opts.LocalIP == "" {
		opts.LocalIP = conn.LocalAddr().(*net.TCPAddr).IP.String()
	}
	d, err := uc.Open(backend, opts)
	if err != nil {
		return err
	}
	defer d.Close()
	buf, err := uc.Alloc(d, bufLen)
	if err != nil {
		return err
	}
	mr, err := d.RegMR(buf, uc.AccessLocalWrite|uc.AccessRemoteWrite)
	if err != nil {
		return err
	}
	defer mr.Dereg()
	src, err := uc.Alloc(d, bufLen)
	if err != nil {
		return err
	}
	smr, err := d.RegMR(src, uc.AccessLocalWrite)
	if err != nil {
		return err
	}
	defer smr.Dereg()
	qp, err := d.CreateQP(uc.QPConfig{SendDepth: 16, RecvDepth: 16, PathMTU: mtu})
	if err != nil {
		return err
	}
	defer qp.Close()
	for i := 0; i < 16; i++ {
		qp.PostRecv(uint64(i))
	}
	remote, err := uc.Exchange(conn, uc.ConnParams{QPN: qp.QPN(), PSN: qp.PSN(), GID: d.GID(), RKey: mr.RKey(), Addr: mr.Addr(), Len: bufLen, MTU: uint32(qp.PathMTU())}, wait)
	if err != nil {
		return err
	}
	if err := qp.Connect(remote); err != nil {
		return err
	}
	if err := uc.Sync(conn, wait); err != nil {
		return err
	}
	fmt.Printf("ucxchg: %s %s qpn %#x <-> qpn %#x, path MTU %d\n", backend, d.Name(), qp.QPN(), remote.QPN, uc.MinMTU(uint32(qp.PathMTU()), remote.MTU))
	db, _ := qp.(doorbeller)
	if doorbell && db == nil {
		return fmt.Errorf("-doorbell: backend %s has no doorbell", backend)
	}
	rings := 0
	ring := func() error {
		if !doorbell {
			return nil
		}
		rings++
		return db.Doorbell()
	}
	var wcs [4]uc.WC
	send := func(round int, side byte) error {
		size := sizes[round%len(sizes)]
		plain := pattern(round, size/3+1, side^0x55)
		copy(src[plainAt:], plain)
		if err := qp.PostWrite(&uc.WriteWR{Local: smr, Offset: plainAt, Length: len(plain), RemoteAddr: remote.Addr + plainAt, RKey: remote.RKey}); err != nil {
			return err
		}
		copy(src, pattern(round, size, side))
		if err := qp.PostWrite(&uc.WriteWR{WRID: uint64(round), Local: smr, Length: size, RemoteAddr: remote.Addr, RKey: remote.RKey,
			HasImm: true, Imm: uint32(round)<<20 | uint32(size), Signaled: true}); err != nil {
			return err
		}
		if err := ring(); err != nil {
			return err
		}
		// The send completion frees the source buffer for the next round.
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := qp.PollSend(wcs[:])
			if err != nil {
				return err
			}
			if n > 0 {
				if wcs[0].Status != uc.WCSuccess || wcs[0].WRID != uint64(round) {
					return fmt.Errorf("round %d: send completion %+v", round, wcs[0])
				}
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("round %d: no send completion", round)
			}
			qp.WaitSend(time.Millisecond)
			if err := ring(); err != nil {
				return err
			}
		}
	}
	recv := func(round int, side byte) error {
		size := sizes[round%len(sizes)]
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := qp.PollRecv(wcs[:1])
			if err != nil {
				return err
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("round %d: no WRITE WITH IMMEDIATE arrived (size %d)", round, size)
			}
			qp.WaitRecv(10 * time.Millisecond)
		}
		wc := wcs[0]
		qp.PostRecv(wc.WRID)
		if wc.Status != uc.WCSuccess || wc.Opcode != uc.WCRecvRDMAWithImm {
			return fmt.Errorf("round %d: completion %+v", round, wc)
		}
		if wc.Imm != uint32(round)<<20|uint32(size) || int(wc.ByteLen) != size {
			return fmt.Errorf("round %d: imm %#x len %d, want %#x len %d", round, wc.Imm, wc.ByteLen, uint32(round)<<20|uint32(size), size)
		}
		if !bytes.Equal(buf[:size], pattern(round, size, side)) {
			return fmt.Errorf("round %d: WRITE WITH IMMEDIATE payload (%d bytes) differs", round, size)
		}
		plain := pattern(round, size/3+1, side^0x55)
		if !bytes.Equal(buf[plainAt:plainAt+len(plain)], plain) {
			return fmt.Errorf("round %d: plain WRITE payload (%d bytes) differs", round, len(plain))
		}
		return nil
	}
	for r := 0; r < rounds; r++ {
		if listen == "" {
			if err := send(r, 'A'); err != nil {
				return err
			}
			if err := recv(r, 'B'); err != nil {
				return err
			}
		} else {
			if err := recv(r, 'A'); err != nil {
				return err
			}
			if err := send(r, 'B'); err != nil {
				return err
			}
		}
	}
	if err := uc.Sync(conn, 10*time.Second); err != nil {
		return errors.New("final sync: " + err.Error())
	}
	if db != nil {
		fmt.Printf("ucxchg: send doorbells: %d rung by -doorbell, %d by the stall watch\n", rings, db.Kicks())
	}
	fmt.Printf("ucxchg: OK %d rounds, WRITE + WRITE WITH IMMEDIATE both ways, sizes 1..%d\n", rounds, sizes[len(sizes)-1])
	return nil
}
