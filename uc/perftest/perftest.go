// Package perftest is a perftest-style benchmark of RDMA WRITE over a UC
// QP on either uc backend: write latency (ib_write_lat) and write bandwidth
// and message rate (ib_write_bw), with perftest's flags and output columns.
//
// Differences from perftest: the latency ping-pong uses WRITE WITH
// IMMEDIATE and polls the receive CQ (perftest's write_lat polls the last
// byte of the buffer), because the soft backend's memory is written by
// another goroutine; the side channel carries the client's parameters, so
// the server needs no -s/-n/-a of its own.
package perftest

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/nuse-project/nuse/uc"
	_ "github.com/nuse-project/nuse/uc/proxy" // the "daemon" backend (--via-daemon)
	_ "github.com/nuse-project/nuse/uc/soft"  // the soft backend is always there
)

// Params are the perftest flags.
type Params struct {
	Size     int
	Iters    int
	All      bool
	Conn     string
	Dev      string
	GIDIndex int
	Backend  string
	Port     int
	Local    string
	MTU      int
	TxDepth  int
	CQMod    int
	Events   bool
	Host     string // client if set
	Timeout  time.Duration
	// ViaDaemon posts through the NUSE daemon (uc/proxy), which opens
	// Backend's device for us: the seed's forwarding experiment.
	ViaDaemon bool
	Sock      string
}

// Run parses perftest-style arguments for mode "lat" or "bw" and runs.
func Run(mode string, args []string, stdout, stderr io.Writer) int {
	name := "uc-write-" + mode
	fs := flag.NewFlagSet("nuse perf "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p Params
	defIters := 1000
	if mode == "bw" {
		defIters = 5000
	}
	fs.IntVar(&p.Size, "s", 2, "message size in bytes (--size)")
	fs.IntVar(&p.Size, "size", 2, "message size in bytes")
	fs.IntVar(&p.Iters, "n", defIters, "iterations (--iters)")
	fs.IntVar(&p.Iters, "iters", defIters, "iterations")
	fs.BoolVar(&p.All, "a", false, "all sizes 2..2^23 (--all)")
	fs.BoolVar(&p.All, "all", false, "all sizes 2..2^23")
	fs.StringVar(&p.Conn, "c", "UC", "connection type (only UC)")
	fs.StringVar(&p.Conn, "connection", "UC", "connection type (only UC)")
	fs.StringVar(&p.Dev, "d", "", "verbs device (--ib-dev)")
	fs.StringVar(&p.Dev, "ib-dev", "", "verbs device")
	fs.IntVar(&p.GIDIndex, "x", 1, "verbs GID index (--gid-index)")
	fs.IntVar(&p.GIDIndex, "gid-index", 1, "verbs GID index")
	fs.StringVar(&p.Backend, "backend", "soft", "uc backend: soft or verbs")
	fs.IntVar(&p.Port, "p", 18515, "side-channel TCP port (--port)")
	fs.IntVar(&p.Port, "port", 18515, "side-channel TCP port")
	fs.StringVar(&p.Local, "local", "", "soft: local IPv4 address (default: from the side channel)")
	fs.IntVar(&p.MTU, "m", 1024, "path MTU 256..4096 (--mtu)")
	fs.IntVar(&p.MTU, "mtu", 1024, "path MTU 256..4096")
	fs.IntVar(&p.TxDepth, "t", 128, "bw: send queue depth (--tx-depth)")
	fs.IntVar(&p.TxDepth, "tx-depth", 128, "bw: send queue depth")
	fs.IntVar(&p.CQMod, "Q", 100, "bw: signal one completion every Q writes (--cq-mod)")
	fs.IntVar(&p.CQMod, "cq-mod", 100, "bw: signal one completion every Q writes")
	fs.BoolVar(&p.Events, "e", false, "sleep on CQ events instead of polling (--events)")
	fs.BoolVar(&p.Events, "events", false, "sleep on CQ events instead of polling")
	fs.DurationVar(&p.Timeout, "timeout", 60*time.Second, "give up on a peer or a lost message after this long")
	fs.BoolVar(&p.ViaDaemon, "via-daemon", false, "post through the NUSE daemon, which drives the --backend device (shared-memory queue)")
	fs.StringVar(&p.Sock, "sock", "", "with --via-daemon: the daemon's control socket (default $NUSE_SOCK or /run/nuse/nused.sock)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: nuse perf %s [flags] [server-host]\n  server: no host argument; client: the server's address\n", name)
		fs.PrintDefaults()
	}
	// perftest puts the host anywhere; accept it first or last.
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		p.Host, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 || (fs.NArg() == 1 && p.Host != "") {
		fs.Usage()
		return 2
	}
	if fs.NArg() == 1 {
		p.Host = fs.Arg(0)
	}
	if p.Conn != "UC" {
		fmt.Fprintf(stderr, "nuse perf: only -c UC is supported (got %q)\n", p.Conn)
		return 2
	}
	if !uc.ValidMTU(p.MTU) || p.Size < 1 || p.Iters < 1 || p.TxDepth < 1 || p.CQMod < 1 {
		fmt.Fprintln(stderr, "nuse perf: bad -m, -s, -n, -t or -Q")
		return 2
	}
	if err := run(mode, &p, stdout); err != nil {
		fmt.Fprintf(stderr, "nuse perf %s: %v\n", name, err)
		return 1
	}
	return 0
}

// test is what the client tells the server before each size.
type test struct{ size, iters uint32 }

const maxAllSize = 1 << 23

func sizes(p *Params) []int {
	if !p.All {
		return []int{p.Size}
	}
	var s []int
	for n := 2; n <= maxAllSize; n *= 2 {
		s = append(s, n)
	}
	return s
}

type session struct {
	p      *Params
	conn   net.Conn
	dev    uc.Device
	qp     uc.QP
	mr     uc.MR
	remote uc.ConnParams
	bufLen int
}

func (s *session) close() {
	if s.qp != nil {
		s.qp.Close()
	}
	if s.mr != nil {
		s.mr.Dereg()
	}
	if s.dev != nil {
		s.dev.Close()
	}
	if s.conn != nil {
		s.conn.Close()
	}
}

func connect(mode string, p *Params) (*session, error) {
	s := &session{p: p}
	var err error
	if p.Host == "" {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p.Port))
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * p.Timeout))
		if s.conn, err = ln.Accept(); err != nil {
			return nil, err
		}
	} else {
		deadline := time.Now().Add(p.Timeout)
		for {
			s.conn, err = net.DialTimeout("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if p.Local == "" {
		p.Local = s.conn.LocalAddr().(*net.TCPAddr).IP.String()
	}
	backend, o := p.Backend, uc.Options{Dev: p.Dev, GIDIndex: p.GIDIndex, LocalIP: p.Local}
	if p.ViaDaemon {
		backend, o.Via, o.Daemon = "daemon", p.Backend, p.Sock
	}
	if s.dev, err = uc.Open(backend, o); err != nil {
		s.close()
		return nil, err
	}
	// Both sides size the buffer for the largest message either may use.
	s.bufLen = maxAllSize
	if !p.All && p.Size < s.bufLen {
		s.bufLen = p.Size
	}
	if p.Host == "" {
		s.bufLen = maxAllSize
	}
	buf, err := uc.Alloc(s.dev, s.bufLen)
	if err != nil {
		s.close()
		return nil, err
	}
	if s.mr, err = s.dev.RegMR(buf, uc.AccessLocalWrite|uc.AccessRemoteWrite); err != nil {
		s.close()
		return nil, err
	}
	depth := p.TxDepth + 8
	if s.qp, err = s.dev.CreateQP(uc.QPConfig{SendDepth: depth, RecvDepth: depth, PathMTU: p.MTU}); err != nil {
		s.close()
		return nil, err
	}
	for i := 0; i < depth; i++ {
		if err := s.qp.PostRecv(uint64(i)); err != nil {
			s.close()
			return nil, err
		}
	}
	local := uc.ConnParams{QPN: s.qp.QPN(), PSN: s.qp.PSN(), GID: s.dev.GID(), RKey: s.mr.RKey(), Addr: s.mr.Addr(),
		Len: uint64(s.bufLen), MTU: uint32(s.qp.PathMTU())}
	if s.remote, err = uc.Exchange(s.conn, local, p.Timeout); err != nil {
		s.close()
		return nil, err
	}
	if err := s.qp.Connect(s.remote); err != nil {
		s.close()
		return nil, err
	}
	if err := uc.Sync(s.conn, p.Timeout); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func run(mode string, p *Params, w io.Writer) error {
	if p.Backend != "soft" {
		// Like perftest, one thread polls; spare Go threads spinning for
		// work would only take the CPU the device's kernel side needs.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	s, err := connect(mode, p)
	if err != nil {
		return err
	}
	defer s.close()
	banner(w, mode, p, s)
	if mode == "lat" {
		fmt.Fprintln(w, " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ")
	} else {
		fmt.Fprintln(w, " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]")
	}
	var rec [8]byte
	if p.Host != "" {
		for _, size := range sizes(p) {
			if int64(size) > int64(s.remote.Len) || size > s.bufLen {
				return fmt.Errorf("size %d exceeds the buffers", size)
			}
			iters := p.Iters
			if p.All {
				// Bound each size's run to about 256 MB of traffic.
				iters = min(iters, max(16, (256<<20)/size))
			}
			binary.BigEndian.PutUint32(rec[0:], uint32(size))
			binary.BigEndian.PutUint32(rec[4:], uint32(iters))
			if _, err := s.conn.Write(rec[:]); err != nil {
				return err
			}
			if err := uc.Sync(s.conn, p.Timeout); err != nil {
				return err
			}
			if err := s.one(mode, test{uint32(size), uint32(iters)}, w); err != nil {
				return err
			}
			if err := uc.Sync(s.conn, p.Timeout); err != nil {
				return err
			}
		}
		binary.BigEndian.PutUint32(rec[0:], 0)
		s.conn.Write(rec[:])
	} else {
		for {
			s.conn.SetReadDeadline(time.Now().Add(10 * p.Timeout))
			if _, err := io.ReadFull(s.conn, rec[:]); err != nil {
				return err
			}
			t := test{binary.BigEndian.Uint32(rec[0:]), binary.BigEndian.Uint32(rec[4:])}
			if t.size == 0 {
				break
			}
			if int(t.size) > s.bufLen {
				return fmt.Errorf("client asks for size %d beyond the buffer", t.size)
			}
			if err := uc.Sync(s.conn, p.Timeout); err != nil {
				return err
			}
			if err := s.one(mode, t, w); err != nil {
				return err
			}
			if err := uc.Sync(s.conn, p.Timeout); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(w, "---------------------------------------------------------------------------------------")
	return nil
}

func banner(w io.Writer, mode string, p *Params, s *session) {
	title := "RDMA_Write Latency Test"
	if mode == "bw" {
		title = "RDMA_Write BW Test"
	}
	line := "---------------------------------------------------------------------------------------"
	fmt.Fprintf(w, "%s\n                    %s\n", line, title)
	via := ""
	if p.ViaDaemon {
		via = " via the NUSE daemon"
	}
	fmt.Fprintf(w, " Backend         : %s%s\t\tDevice         : %s\n", p.Backend, via, s.dev.Name())
	fmt.Fprintf(w, " Connection type : UC\t\tMtu            : %d[B]\n", p.MTU)
	if mode == "bw" {
		fmt.Fprintf(w, " TX depth        : %d\t\tCQ Moderation  : %d\n", p.TxDepth, p.CQMod)
	}
	fmt.Fprintf(w, " Completion wait : %s\n", map[bool]string{false: "polling", true: "events"}[p.Events])
	fmt.Fprintf(w, "%s\n local address: QPN %#06x PSN %#06x RKey %#08x VAddr %#016x\n", line, s.qp.QPN(), s.qp.PSN(), s.mr.RKey(), s.mr.Addr())
	fmt.Fprintf(w, " remote address: QPN %#06x PSN %#06x RKey %#08x VAddr %#016x\n%s\n", s.remote.QPN, s.remote.PSN, s.remote.RKey, s.remote.Addr, line)
}

var errLost = errors.New("no completion before the timeout (a UC message was lost?)")

// waitRecv returns the next receive completion, polling or sleeping.
func (s *session) waitRecv(wc []uc.WC) error {
	deadline := time.Time{}
	for spins := 0; ; spins++ {
		n, err := s.qp.PollRecv(wc[:1])
		if err != nil {
			return err
		}
		if n == 1 {
			if wc[0].Status != uc.WCSuccess {
				return fmt.Errorf("receive completion status %d", wc[0].Status)
			}
			return s.qp.PostRecv(wc[0].WRID)
		}
		if spins&1023 == 1023 || s.p.Events {
			if deadline.IsZero() {
				deadline = time.Now().Add(s.p.Timeout)
			} else if time.Now().After(deadline) {
				return errLost
			}
			if s.p.Events {
				s.qp.WaitRecv(10 * time.Millisecond)
			}
		} else if spins > 64 && s.p.Backend == "soft" && !s.p.ViaDaemon {
			// The soft backend's receive goroutine needs a core too.
			runtime.Gosched()
		}
	}
}

func (s *session) write(size int, imm bool, signaled bool, wrid uint64) error {
	return s.qp.PostWrite(&uc.WriteWR{WRID: wrid, Local: s.mr, Length: size, RemoteAddr: s.remote.Addr, RKey: s.remote.RKey,
		HasImm: imm, Imm: uint32(size), Signaled: signaled})
}

// reapSend collects send completions (they only free queue slots).
func (s *session) reapSend(wc []uc.WC) (int, error) {
	n, err := s.qp.PollSend(wc)
	for i := 0; i < n; i++ {
		if wc[i].Status != uc.WCSuccess {
			return 0, fmt.Errorf("send completion status %d", wc[i].Status)
		}
	}
	return n, err
}

func (s *session) one(mode string, t test, w io.Writer) error {
	if mode == "lat" {
		return s.lat(t, w)
	}
	return s.bw(t, w)
}

// lat is the ping-pong: the client writes, the server answers each write
// with its own; half the round trip is one latency sample, as perftest
// reports it.
func (s *session) lat(t test, w io.Writer) error {
	var wc [16]uc.WC
	client := s.p.Host != ""
	samples := make([]float64, 0, t.iters)
	for i := uint32(0); i < t.iters; i++ {
		start := time.Now()
		if client {
			if err := s.write(int(t.size), true, true, uint64(i)); err != nil {
				return err
			}
			if err := s.waitRecv(wc[:]); err != nil {
				return fmt.Errorf("iteration %d: %w", i, err)
			}
		} else {
			if err := s.waitRecv(wc[:]); err != nil {
				return fmt.Errorf("iteration %d: %w", i, err)
			}
			if err := s.write(int(t.size), true, true, uint64(i)); err != nil {
				return err
			}
		}
		samples = append(samples, float64(time.Since(start).Nanoseconds())/2000)
		if _, err := s.reapSend(wc[:]); err != nil {
			return err
		}
	}
	// Send completions of the last writes.
	for k := 0; k < 100; k++ {
		if n, _ := s.qp.PollSend(wc[:]); n == 0 {
			break
		}
	}
	if !client {
		return nil
	}
	sort.Float64s(samples)
	var sum, sq float64
	for _, v := range samples {
		sum += v
	}
	avg := sum / float64(len(samples))
	for _, v := range samples {
		sq += (v - avg) * (v - avg)
	}
	pct := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(samples)))) - 1
		return samples[max(0, min(i, len(samples)-1))]
	}
	fmt.Fprintf(w, " %-7d %-13d %-14.2f %-12.2f %-19.2f %-13.2f %-16.2f %-21.2f %.2f\n", t.size, t.iters, samples[0], samples[len(samples)-1],
		samples[len(samples)/2], avg, math.Sqrt(sq/float64(len(samples))), pct(0.99), pct(0.999))
	return nil
}

// bw: the client keeps up to TxDepth writes outstanding, signalling every
// CQMod-th; the last write carries an immediate so the server knows it is
// done (if UC lost it, the Sync after the test still ends the round).
func (s *session) bw(t test, w io.Writer) error {
	if s.p.Host == "" {
		var wc [1]uc.WC
		// Best effort: wait for the closing immediate, bounded.
		deadline := time.Now().Add(s.p.Timeout)
		for time.Now().Before(deadline) {
			n, err := s.qp.PollRecv(wc[:])
			if err != nil {
				return err
			}
			if n == 1 {
				s.qp.PostRecv(wc[0].WRID)
				if wc[0].Imm == t.size {
					break
				}
				continue
			}
			s.qp.WaitRecv(time.Millisecond)
		}
		return nil
	}
	var wc [64]uc.WC
	mod := uint32(min(s.p.CQMod, s.p.TxDepth))
	posted, done := uint32(0), uint32(0) // done counts writes known complete
	// Completion progress over time, for the peak.
	type stamp struct {
		at   time.Time
		done uint32
	}
	stamps := make([]stamp, 0, t.iters/mod+2)
	start := time.Now()
	stamps = append(stamps, stamp{start, 0})
	deadline := start.Add(s.p.Timeout)
	for done < t.iters {
		for posted < t.iters && posted-done < uint32(s.p.TxDepth) {
			last := posted == t.iters-1
			sig := (posted+1)%mod == 0 || last
			if err := s.write(int(t.size), last, sig, uint64(posted)); err != nil {
				return err
			}
			posted++
		}
		n, err := s.reapSend(wc[:])
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if c := uint32(wc[i].WRID) + 1; c > done {
				done = c
			}
		}
		if n > 0 {
			stamps = append(stamps, stamp{time.Now(), done})
		}
		if n == 0 {
			if s.p.Events {
				s.qp.WaitSend(time.Millisecond)
			}
			if time.Now().After(deadline) {
				return errLost
			}
		}
	}
	el := time.Since(start).Seconds()
	const mb = 1 << 20 // perftest's MB
	bytes := float64(t.size) * float64(t.iters)
	// The peak is the best rate over windows of at least 1 ms (or a 50th
	// of the run), so one batch of completions cannot fake a spike.
	peak := 0.0
	win := max(time.Millisecond, time.Duration(el*float64(time.Second))/50)
	for i, j := 0, 1; j < len(stamps); j++ {
		if d := stamps[j].at.Sub(stamps[i].at); d >= win {
			peak = max(peak, float64(stamps[j].done-stamps[i].done)*float64(t.size)/d.Seconds()/mb)
			i = j
		}
	}
	avg := bytes / el / mb
	peak = max(peak, avg)
	fmt.Fprintf(w, " %-10d %-14d %-18.2f %-20.2f %.6f\n", t.size, t.iters, peak, avg, float64(t.iters)/el/1e6)
	return nil
}

// Main is for a standalone binary: mode "lat" or "bw".
func Main(mode string) { os.Exit(Run(mode, os.Args[1:], os.Stdout, os.Stderr)) }
