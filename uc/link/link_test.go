package link

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nuse-project/nuse/uc"
	"github.com/nuse-project/nuse/uc/soft"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func TestParse(t *testing.T) {
	c, err := Parse("peer=10.0.0.2:7471,local=10.0.0.1,slots=512,pmtu=2048,mtu=4000,backend=verbs,dev=rxe0,gid=3,wait=5s")
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer != "10.0.0.2:7471" || c.Opts.LocalIP != "10.0.0.1" || c.Slots != 512 || c.PathMTU != 2048 || c.MTU != 4000 ||
		c.Backend != "verbs" || c.Opts.Dev != "rxe0" || c.Opts.GIDIndex != 3 || c.Wait != 5*time.Second {
		t.Fatalf("%+v", c)
	}
	for _, bad := range []string{"", "peer=a:1,listen=b:2", "peer=a:1,bogus=1", "peer=a:1,slots=x", "peer"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func newStack(t *testing.T, ep stack.LinkEndpoint, addr string) *stack.Stack {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if e := s.CreateNIC(1, ep); e != nil {
		t.Fatal(e)
	}
	pfx := netip.MustParsePrefix(addr)
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{
		Address: tcpip.AddrFrom4(pfx.Addr().As4()), PrefixLen: pfx.Bits()}}
	if e := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); e != nil {
		t.Fatal(e)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: 1}})
	return s
}

// softPair connects two soft endpoints with a 4-slot ring over loopback:
// a listens on aIP:chanPort, b dials from bIP; port is the RoCE UDP port.
// Both are closed when the test ends.
func softPair(t *testing.T, aIP, bIP string, chanPort, port int) (a, b *Endpoint) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for the soft backend's raw socket")
	}
	listen := fmt.Sprintf("%s:%d", aIP, chanPort)
	var errA error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a, errA = New(Config{Listen: listen, Slots: 4, MTU: 1500, PathMTU: 512, Wait: 10 * time.Second, Opts: uc.Options{Port: port}})
	}()
	b, err := New(Config{Peer: listen, Slots: 4, MTU: 1500, PathMTU: 512, Wait: 10 * time.Second,
		Opts: uc.Options{LocalIP: bIP, Port: port}})
	wg.Wait()
	if err != nil || errA != nil {
		t.Fatal(err, errA)
	}
	return a, b
}

// transfer starts sending size random bytes over TCP from a stack on a to
// one on b (subnet 192.168.N.0/24) and returns them with the channel that
// yields what b received. The write runs in the background: callers bound
// the wait.
func transfer(t *testing.T, a, b *Endpoint, subnet byte, size int) ([]byte, <-chan []byte) {
	t.Helper()
	sa := newStack(t, a, fmt.Sprintf("192.168.%d.1/24", subnet))
	sb := newStack(t, b, fmt.Sprintf("192.168.%d.2/24", subnet))
	t.Cleanup(func() {
		sa.Close()
		sb.Close()
		a.Close()
		b.Close()
	})
	ln, err := gonet.ListenTCP(sb, tcpip.FullAddress{NIC: 1, Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		r, _ := io.ReadAll(c)
		c.Close()
		got <- r
	}()
	c, err := gonet.DialTCP(sa, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{192, 168, subnet, 2}), Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c.Write(data)
		c.Close()
	}()
	return data, got
}

// TestTCPOverLossySmallRing runs TCP over two soft endpoints on loopback
// with a tiny ring (credit stalls on every burst) and 2% injected loss in
// both directions (lost data, lost credits, lost credit requests).
func TestTCPOverLossySmallRing(t *testing.T) {
	// Addresses of its own: uc/soft tests may run at the same time.
	a, b := softPair(t, "127.0.0.3", "127.0.0.4", 7499, 0)
	for _, e := range []*Endpoint{a, b} {
		e.dev.(*soft.Device).SetRxLoss(0.02)
	}
	data, got := transfer(t, a, b, 90, 2<<20)
	select {
	case r := <-got:
		if !bytes.Equal(r, data) {
			t.Fatalf("received %d bytes, sha256 %x; sent %x", len(r), sha256.Sum256(r), sha256.Sum256(data))
		}
	case <-time.After(90 * time.Second):
		t.Fatal("transfer did not finish")
	}
	t.Logf("a: tx %d rx %d lost %d stalls %d credits %d; b: tx %d rx %d lost %d stalls %d credits %d",
		a.Stats.TxPackets.Load(), a.Stats.RxPackets.Load(), a.Stats.RxLost.Load(), a.Stats.CreditStalls.Load(), a.Stats.CreditsSent.Load(),
		b.Stats.TxPackets.Load(), b.Stats.RxPackets.Load(), b.Stats.RxLost.Load(), b.Stats.CreditStalls.Load(), b.Stats.CreditsSent.Load())
	if a.Stats.CreditStalls.Load() == 0 {
		t.Log("note: the sender never ran out of credits")
	}
}

// A window lost whole: every message toward b is dropped for a while, so
// the sender runs out of credits with all its messages lost. The credit
// request (which carries the sent count) lets b count them lost and the
// transfer resumes; without it both sides would wait forever.
func TestWholeWindowLost(t *testing.T) {
	a, b := softPair(t, "127.0.0.5", "127.0.0.6", 7498, 14790)
	data, got := transfer(t, a, b, 91, 1<<20)
	time.Sleep(20 * time.Millisecond)
	b.dev.(*soft.Device).SetRxLoss(1) // everything toward b is lost
	time.Sleep(300 * time.Millisecond)
	b.dev.(*soft.Device).SetRxLoss(0)
	select {
	case r := <-got:
		if !bytes.Equal(r, data) {
			t.Fatalf("received %d bytes, want %d intact", len(r), len(data))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("transfer stalled after the window was lost: a sent %d, peer credit %d; b rx next %d",
			a.Stats.DataSent.Load(), a.Stats.PeerCredit.Load(), b.Stats.RxNext.Load())
	}
	t.Logf("b counted %d messages lost; a stalled on credits %d times", b.Stats.RxLost.Load(), a.Stats.CreditStalls.Load())
}
