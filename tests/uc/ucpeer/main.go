// Command ucpeer is a test peer for the UC link endpoint: a gVisor stack
// whose only NIC is a uc link, serving or sending one TCP stream. It prints
// the byte count and SHA-256 of what it sent or received.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/nuse-project/nuse/uc/link"
	_ "github.com/nuse-project/nuse/uc/soft"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func main() {
	netdevArg := flag.String("netdev", "", "uc netdev argument (peer=... or listen=...)")
	addr := flag.String("addr", "", "this stack's address, CIDR (e.g. 192.168.77.1/24)")
	connect := flag.String("connect", "", "send to this ADDR:PORT (else serve on -port)")
	port := flag.Int("port", 5001, "TCP port to serve")
	size := flag.Int64("size", 20<<20, "bytes to send")
	timeout := flag.Duration("timeout", 120*time.Second, "give up after this long")
	flag.Parse()
	time.AfterFunc(*timeout, func() {
		if e := current.Load(); e != nil {
			fmt.Fprintln(os.Stderr, "ucpeer: link stats:", e.Stats.String())
		}
		fmt.Fprintln(os.Stderr, "ucpeer: timeout")
		os.Exit(3)
	})
	if err := run(*netdevArg, *addr, *connect, *port, *size); err != nil {
		fmt.Fprintln(os.Stderr, "ucpeer:", err)
		os.Exit(1)
	}
}

var current atomic.Pointer[link.Endpoint]

func run(netdevArg, addr, connect string, port int, size int64) error {
	cfg, err := link.Parse(netdevArg)
	if err != nil {
		return err
	}
	cfg.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	ep, err := link.New(cfg)
	if err != nil {
		return err
	}
	current.Store(ep)
	defer ep.Close()
	pfx, err := netip.ParsePrefix(addr)
	if err != nil {
		return err
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	defer s.Close()
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	bufs := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &bufs)
	sbufs := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sbufs)
	if e := s.CreateNIC(1, ep); e != nil {
		return fmt.Errorf("CreateNIC: %v", e)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{
		Address: tcpip.AddrFrom4(pfx.Addr().As4()), PrefixLen: pfx.Bits()}}
	if e := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); e != nil {
		return fmt.Errorf("AddProtocolAddress: %v", e)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})

	h := sha256.New()
	var n int64
	start := time.Now()
	if connect == "" {
		ln, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: 1, Port: uint16(port)}, ipv4.ProtocolNumber)
		if err != nil {
			return err
		}
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		n, err = io.Copy(h, c)
		if err != nil {
			return err
		}
		// Tell the sender what arrived, then give the FIN time to leave
		// before the stack goes away.
		c.Write(h.Sum(nil))
		c.Close()
		time.Sleep(500 * time.Millisecond)
	} else {
		ap, err := netip.ParseAddrPort(connect)
		if err != nil {
			return err
		}
		var c *gonet.TCPConn
		// The listener may not be up yet: retry for a while.
		for i := 0; ; i++ {
			c, err = gonet.DialTCP(s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}, ipv4.ProtocolNumber)
			if err == nil || i > 50 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			return err
		}
		rng := rand.NewChaCha8([32]byte{'n', 'u', 's', 'e'})
		buf := make([]byte, 64<<10)
		for n < size {
			m := min(int64(len(buf)), size-n)
			rng.Read(buf[:m])
			h.Write(buf[:m])
			if _, err := c.Write(buf[:m]); err != nil {
				return err
			}
			n += m
		}
		c.CloseWrite()
		// The server answers with the digest of what it received.
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			return err
		}
		if hex.EncodeToString(got) != hex.EncodeToString(h.Sum(nil)) {
			return fmt.Errorf("server digest %x differs from ours %x", got, h.Sum(nil))
		}
	}
	el := time.Since(start)
	st := &ep.Stats
	fmt.Fprintln(os.Stderr, "ucpeer: link stats:", st.String())
	fmt.Printf("bytes %d sha256 %s secs %.3f mbit %.1f tx %d rx %d lost %d stalls %d\n", n, hex.EncodeToString(h.Sum(nil)),
		el.Seconds(), float64(n)*8/el.Seconds()/1e6, st.TxPackets.Load(), st.RxPackets.Load(), st.RxLost.Load(), st.CreditStalls.Load())
	return nil
}
