// Command nusekmod is the guest-side test program of kmod/: a gVisor stack
// on a netdev (the kernel module's "kmod" kind, or "tap" to compare), with
// an HTTP server inside, and a benchmark of both directions.
//
//	nusekmod serve -netdev kmod -addr 10.99.0.2/24 -host-addr 10.99.0.1/24 -ready /tmp/ready
//	nusekmod bench -netdev kmod -secs 3
//
// serve answers, on port 80 of the stack's address:
//
//	GET  /blob        -blob-size deterministic bytes
//	GET  /sha         sha256 of /blob
//	GET  /fetch?url=U the sha256 and length of U, fetched from inside the stack
//	POST /upload      the sha256 and length of the body
//
// It runs until SIGTERM/SIGINT and removes its device on the way out.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nuse-project/nuse/stack/netdev"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	_ "github.com/nuse-project/nuse/stack/link/kmod"
	_ "github.com/nuse-project/nuse/stack/link/tap"
)

type opts struct {
	netdev, dev string
	addr, host  netip.Prefix
	mtu         uint
}

func commonFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.netdev, "netdev", "kmod", "netdev kind (kmod, tap)")
	fs.StringVar(&o.dev, "dev", "nuse0", "device name")
	fs.Func("addr", "the stack's address (default 10.99.0.2/24)", func(s string) (err error) {
		o.addr, err = netip.ParsePrefix(s)
		return
	})
	fs.Func("host-addr", "the kernel side's address (default 10.99.0.1/24)", func(s string) (err error) {
		o.host, err = netip.ParsePrefix(s)
		return
	})
	fs.UintVar(&o.mtu, "mtu", 1500, "MTU")
	o.addr = netip.MustParsePrefix("10.99.0.2/24")
	o.host = netip.MustParsePrefix("10.99.0.1/24")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nusekmod serve|bench [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "bench":
		err = bench(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nusekmod:", err)
		os.Exit(1)
	}
}

type env struct {
	s   *stack.Stack
	dev *netdev.Device
	o   opts
}

func (e *env) close() {
	e.s.RemoveNIC(1)
	e.s.Close()
	e.s.Wait()
	if err := e.dev.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "nusekmod: close:", err)
	}
}

func setup(o opts) (*env, error) {
	dev, err := netdev.Open(o.netdev, netdev.Config{
		Name: o.dev, MTU: uint32(o.mtu), HostAddrs: []netip.Prefix{o.host},
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if err != nil {
		return nil, err
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	if terr := s.CreateNIC(1, dev.Link); terr != nil {
		dev.Close()
		return nil, fmt.Errorf("CreateNIC: %v", terr)
	}
	proto := ipv4.ProtocolNumber
	if o.addr.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	a := tcpip.AddrFromSlice(o.addr.Addr().AsSlice())
	pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddressWithPrefix{Address: a, PrefixLen: o.addr.Bits()}}
	if terr := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); terr != nil {
		return nil, fmt.Errorf("AddProtocolAddress: %v", terr)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
	return &env{s: s, dev: dev, o: o}, nil
}

func (e *env) full(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	p := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		p = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, p
}

func blob(size int) []byte {
	b := make([]byte, size)
	rand.New(rand.NewSource(42)).Read(b)
	return b
}

func (e *env) httpClient() *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				ap, err := netip.ParseAddrPort(addr)
				if err != nil {
					return nil, err
				}
				fa, p := e.full(ap)
				return gonet.DialContextTCP(ctx, e.s, fa, p)
			},
		},
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var o opts
	commonFlags(fs, &o)
	size := fs.Int("blob-size", 4<<20, "size of /blob")
	ready := fs.String("ready", "", "file to create when serving")
	fs.Parse(args)

	e, err := setup(o)
	if err != nil {
		return err
	}
	defer e.close()
	data := blob(*size)
	sum := sha256.Sum256(data)
	fa, p := e.full(netip.AddrPortFrom(o.addr.Addr(), 80))
	ln, err := gonet.ListenTCP(e.s, fa, p)
	if err != nil {
		return fmt.Errorf("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data)
	})
	mux.HandleFunc("/sha", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, hex.EncodeToString(sum[:]))
	})
	client := e.httpClient()
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%x %d\n", h.Sum(nil), n)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%x %d\n", h.Sum(nil), n)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	if *ready != "" {
		os.WriteFile(*ready, []byte(e.dev.Name+"\n"), 0o644)
	}
	fmt.Fprintf(os.Stderr, "nusekmod: serving on %s over %s %s\n", o.addr.Addr(), e.dev.Kind, e.dev.Name)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return nil
}

// bench measures, over one netdev, small-packet rates and bulk TCP in both
// directions between kernel sockets and the gVisor stack.
func bench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	var o opts
	commonFlags(fs, &o)
	secs := fs.Float64("secs", 3, "seconds per measurement")
	psize := fs.Int("size", 64, "UDP payload bytes for the packet-rate runs")
	fs.Parse(args)
	dur := time.Duration(*secs * float64(time.Second))

	e, err := setup(o)
	if err != nil {
		return err
	}
	defer e.close()
	stackIP, hostIP := o.addr.Addr(), o.host.Addr()

	// k2u: kernel UDP socket -> gVisor UDP socket.
	fa, p := e.full(netip.AddrPortFrom(stackIP, 9000))
	gu, err := gonet.DialUDP(e.s, &fa, nil, p)
	if err != nil {
		return fmt.Errorf("gvisor udp: %v", err)
	}
	var got atomic.Uint64
	go func() {
		b := make([]byte, 65536)
		for {
			if _, _, err := gu.ReadFrom(b); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	ku, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(stackIP, 9000)))
	if err != nil {
		return err
	}
	payload := make([]byte, *psize)
	sent, rcvd := blast(dur, func() error { _, err := ku.Write(payload); return err }, &got)
	gu.Close()
	ku.Close()
	fmt.Printf("bench %s udp k2u: sent %.0f pkt/s, received %.0f pkt/s\n", e.o.netdev, sent, rcvd)
	k2uPPS := rcvd

	// u2k: gVisor UDP socket -> kernel UDP socket.
	kl, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(hostIP, 9001)))
	if err != nil {
		return err
	}
	kl.SetReadBuffer(4 << 20)
	var got2 atomic.Uint64
	go func() {
		b := make([]byte, 65536)
		for {
			if _, _, err := kl.ReadFrom(b); err != nil {
				return
			}
			got2.Add(1)
		}
	}()
	la, _ := e.full(netip.AddrPortFrom(stackIP, 9002))
	ra, _ := e.full(netip.AddrPortFrom(hostIP, 9001))
	gs, err := gonet.DialUDP(e.s, &la, &ra, p)
	if err != nil {
		return fmt.Errorf("gvisor udp: %v", err)
	}
	sent, rcvd = blast(dur, func() error { _, err := gs.Write(payload); return err }, &got2)
	gs.Close()
	kl.Close()
	fmt.Printf("bench %s udp u2k: sent %.0f pkt/s, received %.0f pkt/s\n", e.o.netdev, sent, rcvd)
	u2kPPS := rcvd

	// Request/response: a kernel UDP client keeps `window` small datagrams
	// in flight to an echo server in the stack. Each transaction is one
	// packet each way; nothing is dropped, so this is the path's packet
	// rate without the noise of who wins the CPU in a blast.
	rr1, err := e.udpRR(dur, stackIP, 1, *psize)
	if err != nil {
		return err
	}
	rr16, err := e.udpRR(dur, stackIP, 16, *psize)
	if err != nil {
		return err
	}
	fmt.Printf("bench %s udp rr: window 1 %.0f trans/s, window 16 %.0f trans/s (%.0f pkt/s)\n", e.o.netdev, rr1, rr16, 2*rr16)

	// Bulk TCP, gVisor -> kernel and kernel -> gVisor.
	down, err := e.bulk(dur, stackIP, true)
	if err != nil {
		return err
	}
	up, err := e.bulk(dur, stackIP, false)
	if err != nil {
		return err
	}
	fmt.Printf("bench %s tcp: stack->kernel %.1f Mbit/s, kernel->stack %.1f Mbit/s\n", e.o.netdev, down*8/1e6, up*8/1e6)
	fmt.Printf("RESULT kind=%s mtu=%d rr1_tps=%.0f rr16_pps=%.0f k2u_pps=%.0f u2k_pps=%.0f tcp_s2k_Bps=%.0f tcp_k2s_Bps=%.0f\n",
		e.o.netdev, o.mtu, rr1, 2*rr16, k2uPPS, u2kPPS, down, up)
	return nil
}

// blast calls send in a loop for d; returns send and receive rates. Sends
// are paced only by the sender's own cost (drops are expected).
func blast(d time.Duration, send func() error, got *atomic.Uint64) (sent, rcvd float64) {
	// Warm up (and give the receiver a first packet).
	for i := 0; i < 100; i++ {
		send()
	}
	time.Sleep(100 * time.Millisecond)
	start, g0 := time.Now(), got.Load()
	n := 0
	for time.Since(start) < d {
		for i := 0; i < 64; i++ {
			if send() == nil {
				n++
			}
		}
	}
	el := time.Since(start)
	time.Sleep(200 * time.Millisecond) // let the queues drain
	return float64(n) / el.Seconds(), float64(got.Load()-g0) / el.Seconds()
}

// bulk moves bytes over one TCP connection for d; down = gVisor sends.
func (e *env) bulk(d time.Duration, stackIP netip.Addr, down bool) (float64, error) {
	port := uint16(5001)
	if !down {
		port = 5002
	}
	fa, p := e.full(netip.AddrPortFrom(stackIP, port))
	ln, err := gonet.ListenTCP(e.s, fa, p)
	if err != nil {
		return 0, fmt.Errorf("listen: %v", err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	stop := make(chan struct{})
	var srvN int64
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if down {
			buf := make([]byte, 256<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.SetWriteDeadline(time.Now().Add(time.Second))
				n, err := c.Write(buf)
				srvN += int64(n)
				if err != nil {
					return
				}
			}
		}
		n, _ := io.Copy(io.Discard, c)
		srvN = n
	}()
	kc, err := net.DialTimeout("tcp", netip.AddrPortFrom(stackIP, port).String(), 10*time.Second)
	if err != nil {
		return 0, fmt.Errorf("dial: %v", err)
	}
	buf := make([]byte, 256<<10)
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		kc.SetDeadline(time.Now().Add(2 * time.Second))
		var m int
		if down {
			m, err = kc.Read(buf)
		} else {
			m, err = kc.Write(buf)
		}
		n += int64(m)
		if err != nil {
			break
		}
	}
	el := time.Since(start)
	close(stop)
	kc.Close()
	wg.Wait()
	if err != nil && n == 0 {
		return 0, err
	}
	return float64(n) / el.Seconds(), nil
}

// udpRR runs UDP request/response with window requests in flight; returns
// transactions per second.
func (e *env) udpRR(d time.Duration, stackIP netip.Addr, window, size int) (float64, error) {
	fa, p := e.full(netip.AddrPortFrom(stackIP, 9003))
	echo, err := gonet.DialUDP(e.s, &fa, nil, p)
	if err != nil {
		return 0, fmt.Errorf("gvisor udp: %v", err)
	}
	defer echo.Close()
	go func() {
		b := make([]byte, 65536)
		for {
			n, from, err := echo.ReadFrom(b)
			if err != nil {
				return
			}
			echo.WriteTo(b[:n], from)
		}
	}()
	kc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(stackIP, 9003)))
	if err != nil {
		return 0, err
	}
	defer kc.Close()
	req := make([]byte, size)
	b := make([]byte, 65536)
	for i := 0; i < window; i++ {
		kc.Write(req)
	}
	var n int
	start := time.Now()
	for time.Since(start) < d {
		kc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := kc.Read(b); err != nil {
			// A loss: put a request back in flight.
			kc.Write(req)
			continue
		}
		n++
		kc.Write(req)
	}
	el := time.Since(start)
	// Drain the replies still in flight.
	for {
		kc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := kc.Read(b); err != nil {
			break
		}
	}
	return float64(n) / el.Seconds(), nil
}
