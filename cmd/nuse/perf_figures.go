package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

func init() {
	registerPerf("figures", "the seed's Figures 4.2/4.3 (UC soft backend) and the same for TCP per engine: PNG, JSON, Markdown", runPerfFigures)
}

// figOpts are nuse perf figures' flags.
type figOpts struct {
	dir                  string
	sizes                []uint
	ucLat, ucBW          int
	tcpLat, tcpRate      int
	reps                 int
	engines              string
	noUC, noTCP, noNetns bool
	quick                bool
	args                 []string // as given, for the record
}

const figEnvInner = "NUSE_FIGURES_NETNS" // set in the re-executed copy inside the namespace

func runPerfFigures(args []string) int {
	fs := flag.NewFlagSet("nuse perf figures", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: nuse perf figures [flags] DIR

Reproduces the seed's Figure 4.2 (message rate against message size, native
RDMA WRITE vs NUSE, polling) and Figure 4.3 (median latency against message
size) on the UC soft backend, and the same two figures for TCP (kernel
loopback vs NUSE, one line per engine), all in one run. Writes into DIR:
  uc-msgrate.png uc-latency.png tcp-msgrate.png tcp-latency.png
  figures.json   every point, ratio to native/kernel, and the raw rows
  figures.md     a table per figure with the ratios NUSE/native
As root it runs in a network namespace of its own (loopback only) and
removes it, with every daemon and program it started, at the end. Without
root the UC figures (raw sockets) are skipped and TCP runs on loopback.

flags:`)
		fs.PrintDefaults()
	}
	var o figOpts
	sizeList := fs.String("sizes", "2,16,64,256,1024,4096,16384,65536", "message sizes, comma-separated")
	fs.IntVar(&o.ucLat, "uc-lat-iters", 2000, "uc-write-lat iterations per size")
	fs.IntVar(&o.ucBW, "uc-bw-iters", 100000, "uc-write-bw messages per size (bounded to 64 MB per size)")
	fs.IntVar(&o.tcpLat, "tcp-lat-iters", 1000, "tcp-lat iterations per size")
	fs.IntVar(&o.tcpRate, "tcp-rate-iters", 100000, "tcp-rate messages per size (bounded to 256 MB per size)")
	fs.IntVar(&o.reps, "r", 1, "repeat each measurement, alternating the paths")
	fs.StringVar(&o.engines, "engines", "gvisor,kernel,shm", "the daemon's engines for the TCP figures, comma-separated")
	fs.BoolVar(&o.noUC, "no-uc", false, "skip the UC figures")
	fs.BoolVar(&o.noTCP, "no-tcp", false, "skip the TCP figures")
	fs.BoolVar(&o.noNetns, "no-netns", false, "run in this network namespace (the default as root is a private one)")
	fs.BoolVar(&o.quick, "quick", false, "a smoke run (tests): sizes 64,4096 and few iterations, unless given")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	o.dir, o.args = fs.Arg(0), args
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		def := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		if !set["sizes"] {
			*sizeList = "64,4096"
		}
		def("uc-lat-iters", &o.ucLat, 200)
		def("uc-bw-iters", &o.ucBW, 5000)
		def("tcp-lat-iters", &o.tcpLat, 200)
		def("tcp-rate-iters", &o.tcpRate, 5000)
	}
	var err error
	if o.sizes, err = perfSizes(0, false, *sizeList, 0); err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf figures:", err)
		return 2
	}
	if o.ucLat < 1 || o.ucBW < 1 || o.tcpLat < 1 || o.tcpRate < 1 || o.reps < 1 {
		fmt.Fprintln(os.Stderr, "nuse perf figures: iterations and -r must be at least 1")
		return 2
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf figures:", err)
		return 1
	}
	if os.Getenv(figEnvInner) == "" && os.Geteuid() == 0 && !o.noNetns {
		return figInNetns(args)
	}
	if os.Getenv(figEnvInner) != "" {
		if err := loUp(); err != nil {
			fmt.Fprintln(os.Stderr, "nuse perf figures: loopback up:", err)
			return 1
		}
	}
	if err := figures(&o); err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf figures:", err)
		return 1
	}
	return 0
}

// figInNetns runs this command again in a new network namespace (only
// loopback, no route anywhere), waits for it, then kills whatever is left
// in that namespace (all of it ours) and removes the scratch directory.
func figInNetns(args []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf figures:", err)
		return 1
	}
	work, err := os.MkdirTemp("", "nuse-figures-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf figures:", err)
		return 1
	}
	c := exec.Command(self, append([]string{"perf", "figures"}, args...)...)
	c.Stdout, c.Stderr, c.Stdin = os.Stdout, os.Stderr, nil
	c.Env = append(os.Environ(), figEnvInner+"=1", "TMPDIR="+work)
	c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setpgid: true}
	if err := c.Start(); err != nil {
		os.RemoveAll(work)
		fmt.Fprintln(os.Stderr, "nuse perf figures: a network namespace:", err)
		return 1
	}
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", c.Process.Pid))
	fmt.Fprintf(os.Stderr, "nuse perf figures: in a private network namespace (%s, pid %d)\n", ns, c.Process.Pid)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "nuse perf figures: %v: stopping\n", s)
		_ = c.Process.Signal(syscall.SIGTERM)
		select {
		case werr = <-done:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			werr = <-done
		}
		if werr == nil {
			werr = errors.New("interrupted")
		}
	}
	if n := killNetns(ns); n > 0 {
		fmt.Fprintf(os.Stderr, "nuse perf figures: killed %d leftover process(es) of the namespace\n", n)
	}
	if werr != nil {
		fmt.Fprintf(os.Stderr, "nuse perf figures: %v (scratch kept: %s)\n", werr, work)
		return 1
	}
	os.RemoveAll(work)
	return 0
}

// killNetns kills every process in the network namespace ns (a
// "net:[inode]" link), which only our own child created; the namespace
// goes with its last process.
func killNetns(ns string) int {
	if ns == "" {
		return 0
	}
	n := 0
	for round := 0; round < 20; round++ {
		ents, _ := os.ReadDir("/proc")
		found := 0
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); l == ns {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				found++
			}
		}
		if found == 0 {
			break
		}
		n += found
		time.Sleep(50 * time.Millisecond)
	}
	return n
}

func loUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// figStep runs one child benchmark (this binary), bounded in time.
func figStep(timeout time.Duration, stdout *bytes.Buffer, args ...string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, self, args...)
	c.Stdout, c.Stderr = stdout, os.Stderr
	if stdout == nil {
		c.Stdout = os.Stdout
	}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("nuse %s: no result within %v", strings.Join(args, " "), timeout)
		}
		return fmt.Errorf("nuse %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// figures measures and writes everything.
func figures(o *figOpts) error {
	start, host := time.Now(), thisHost()
	tmp, err := os.MkdirTemp("", "nuse-fig-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var runs []*perfRun
	var notes []string
	if !o.noUC {
		if os.Geteuid() != 0 {
			notes = append(notes, "UC figures skipped: the soft backend needs root (raw sockets)")
			fmt.Fprintln(os.Stderr, "nuse perf figures:", notes[len(notes)-1])
		} else {
			lat, bw, err := figUC(o, tmp)
			if err != nil {
				return err
			}
			runs = append(runs, lat, bw)
		}
	}
	if !o.noTCP {
		for _, mode := range []string{"lat", "rate"} {
			n := o.tcpLat
			if mode == "rate" {
				n = o.tcpRate
			}
			js := filepath.Join(tmp, "tcp-"+mode+".json")
			fmt.Printf("== TCP %s: kernel loopback vs NUSE per engine (%s) ==\n", mode, o.engines)
			if err := figStep(10*time.Minute, nil, "perf", "tcp-"+mode, "--sizes", joinSizes(o.sizes), "-n", strconv.Itoa(n),
				"-r", strconv.Itoa(o.reps), "--engines", o.engines, "--json", js); err != nil {
				return err
			}
			r, err := readPerfRun(js)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
	}
	doc := buildFigures(o, host, runs, notes, time.Since(start))
	if err := writeFigures(o.dir, doc); err != nil {
		return err
	}
	fmt.Printf("== wrote %s (%.0f s) ==\n", o.dir, time.Since(start).Seconds())
	for _, f := range doc.Figures {
		fmt.Printf(" %s\n", filepath.Join(o.dir, f.PNG))
	}
	fmt.Printf(" %s\n %s\n", filepath.Join(o.dir, "figures.json"), filepath.Join(o.dir, "figures.md"))
	return nil
}

// waitUDPFree waits until ip:port can be bound (the soft backend binds
// its RoCEv2 port on its address).
func waitUDPFree(ip string, port int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s:%d still in use after %v: %w", ip, port, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func joinSizes(s []uint) string {
	var b []string
	for _, v := range s {
		b = append(b, strconv.Itoa(int(v)))
	}
	return strings.Join(b, ",")
}

// figUC runs uc-write-lat and uc-write-bw, polling, native and through a
// private daemon (--via-daemon), between 127.0.0.1 (server) and 127.0.0.2
// (client), path MTU 4096, like scripts/uc/bench-host.sh: a server/client
// pair per size and path, alternating the paths per size.
func figUC(o *figOpts, tmp string) (lat, bw *perfRun, err error) {
	sock, stop, err := privateDaemon("nuse perf figures", "", -1)
	if err != nil {
		return nil, nil, err
	}
	defer stop()
	lat, bw = newPerfRun("uc-write-lat", "t_typical_usec"), newPerfRun("uc-write-bw", "msg_rate_mpps")
	port := 18700
	for _, m := range []struct {
		mode string
		res  *perfRun
	}{{"lat", lat}, {"bw", bw}} {
		fmt.Printf("== UC RDMA WRITE %s, soft backend, polling: native vs via the daemon ==\n", m.mode)
		for _, size := range o.sizes {
			n := o.ucLat
			if m.mode == "bw" {
				n = max(16, min(o.ucBW, int((64<<20)/size)))
			}
			for r := 0; r < o.reps; r++ {
				for _, via := range []bool{false, true} {
					port++
					js := filepath.Join(tmp, fmt.Sprintf("uc-%s-%d.json", m.mode, port))
					common := []string{"-m", "4096", "-p", strconv.Itoa(port), "--timeout", "20s"}
					srvArgs := append([]string{"perf", "uc-write-" + m.mode, "--local", "127.0.0.1"}, common...)
					cliArgs := append([]string{"perf", "uc-write-" + m.mode, "--local", "127.0.0.2", "-s", strconv.Itoa(int(size)),
						"-n", strconv.Itoa(n), "--json", js}, common...)
					if via {
						cliArgs = append(cliArgs, "--via-daemon", "--sock", sock)
					}
					cliArgs = append(cliArgs, "127.0.0.1")
					// The daemon lets go of a device shortly after its
					// client ends: wait until both addresses are free.
					for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
						if err := waitUDPFree(ip, 4791, 10*time.Second); err != nil {
							return nil, nil, err
						}
					}
					srvErr := make(chan error, 1)
					var srvOut, cliOut bytes.Buffer
					go func() { srvErr <- figStep(2*time.Minute, &srvOut, srvArgs...) }()
					cerr := figStep(2*time.Minute, &cliOut, cliArgs...)
					serr := <-srvErr
					if cerr != nil || serr != nil {
						return nil, nil, fmt.Errorf("uc-write-%s -s %d: client: %v, server: %v\n%s", m.mode, size, cerr, serr, cliOut.String())
					}
					one, err := readPerfRun(js)
					if err != nil {
						return nil, nil, err
					}
					for _, s := range one.Series {
						dst := m.res.series(s.Name, s.Label)
						dst.Rows = append(dst.Rows, s.Rows...)
						for _, line := range strings.Split(cliOut.String(), "\n") {
							if len(line) > 1 && line[0] == ' ' && line[1] >= '0' && line[1] <= '9' {
								fmt.Printf(" %-7s%s\n", s.Name, line)
							}
						}
					}
				}
			}
		}
	}
	for _, r := range []*perfRun{lat, bw} {
		r.Params["backend"], r.Params["completion"], r.Params["mtu"] = "soft", "polling", "4096"
		r.Params["path"] = "127.0.0.2 (client) -> 127.0.0.1 (server), loopback"
	}
	return lat, bw, nil
}

// figuresDoc is figures.json.
type figuresDoc struct {
	Host    perfHost   `json:"host"`
	Command string     `json:"command"`
	Seconds float64    `json:"seconds"`
	Sizes   []uint     `json:"sizes"`
	Notes   []string   `json:"notes,omitempty"`
	Figures []figDoc   `json:"figures"`
	Runs    []*perfRun `json:"runs"` // every row measured
}

// figDoc is one figure: a line per path, each point with its ratio to the
// baseline path (native RDMA or kernel loopback) of the same size and run.
type figDoc struct {
	ID       string         `json:"id"`
	Seed     string         `json:"seed,omitempty"` // the seed's figure it reproduces
	Title    string         `json:"title"`
	PNG      string         `json:"png"`
	Mode     string         `json:"mode"`
	Metric   string         `json:"metric"`
	Unit     string         `json:"unit"`
	Baseline string         `json:"baseline"`
	Series   []figDocSeries `json:"series"`
}

type figDocSeries struct {
	Name   string     `json:"name"`
	Label  string     `json:"label"`
	Points []figPoint `json:"points"`
}

type figPoint struct {
	Bytes int     `json:"bytes"`
	Value float64 `json:"value"`
	Ratio float64 `json:"ratio,omitempty"` // value / baseline's value
}

func buildFigures(o *figOpts, host perfHost, runs []*perfRun, notes []string, took time.Duration) *figuresDoc {
	doc := &figuresDoc{Host: host, Command: "nuse perf figures " + strings.Join(o.args, " "), Seconds: took.Seconds(),
		Sizes: o.sizes, Notes: notes, Runs: runs}
	specs := map[string]struct{ id, seed, title string }{
		"uc-write-bw":  {"uc-msgrate", "Figure 4.2", "UC RDMA WRITE message rate, soft backend, polling: native vs NUSE"},
		"uc-write-lat": {"uc-latency", "Figure 4.3", "UC RDMA WRITE median latency, soft backend, polling: native vs NUSE"},
		"tcp-rate":     {"tcp-msgrate", "", "TCP send() message rate: kernel loopback vs NUSE per engine"},
		"tcp-lat":      {"tcp-latency", "", "TCP ping-pong median latency: kernel loopback vs NUSE per engine"},
	}
	for _, r := range runs {
		sp, ok := specs[r.Mode]
		if !ok || len(r.Series) == 0 {
			continue
		}
		unit := map[string]string{"msg_rate_mpps": "M messages/s", "t_typical_usec": "µs"}[r.Metric]
		f := figDoc{ID: sp.id, Seed: sp.seed, Title: sp.title, PNG: sp.id + ".png", Mode: r.Mode, Metric: r.Metric, Unit: unit,
			Baseline: r.Series[0].Name}
		bs, bv := r.Series[0].bySize(r.Metric)
		base := map[int]float64{}
		for i, s := range bs {
			base[s] = bv[i]
		}
		for i := range r.Series {
			s := &r.Series[i]
			ds := figDocSeries{Name: s.Name, Label: s.Label}
			sz, v := s.bySize(r.Metric)
			for k := range sz {
				p := figPoint{Bytes: sz[k], Value: v[k]}
				if i > 0 && base[sz[k]] > 0 {
					p.Ratio = v[k] / base[sz[k]]
				}
				ds.Points = append(ds.Points, p)
			}
			f.Series = append(f.Series, ds)
		}
		doc.Figures = append(doc.Figures, f)
	}
	return doc
}

// writeFigures writes the PNGs, figures.json and figures.md into dir.
func writeFigures(dir string, doc *figuresDoc) error {
	for _, f := range doc.Figures {
		y, _ := metricAxis(f.Metric)
		title := f.Title
		if f.Seed != "" {
			title = "(seed " + f.Seed + ") " + title
		}
		fig := &figure{Title: title, X: "message size [bytes]", Y: y}
		for _, s := range f.Series {
			l := figLine{Label: s.Label}
			for _, p := range s.Points {
				l.Sizes, l.Vals = append(l.Sizes, p.Bytes), append(l.Vals, p.Value)
			}
			fig.Lines = append(fig.Lines, l)
		}
		if err := fig.save(filepath.Join(dir, f.PNG)); err != nil {
			return fmt.Errorf("%s: %w", f.PNG, err)
		}
	}
	if err := writeJSON(filepath.Join(dir, "figures.json"), doc); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "figures.md"), []byte(figuresMarkdown(doc)), 0o644)
}

func figuresMarkdown(doc *figuresDoc) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# nuse perf figures\n\n`%s`, %s, %d CPUs, kernel %s, %s, load average at the start %s; %.0f s.\n\n",
		doc.Command, doc.Host.Time, doc.Host.CPUs, doc.Host.Kernel, doc.Host.Go, doc.Host.Load, doc.Seconds)
	b.WriteString("One run on a shared, noisy machine: read the ratios (NUSE over native/kernel, measured in the same run, " +
		"the paths alternating per size), not the absolute figures.\n")
	for _, n := range doc.Notes {
		fmt.Fprintf(&b, "\n%s.\n", n)
	}
	for _, f := range doc.Figures {
		b.WriteString("\n## ")
		if f.Seed != "" {
			b.WriteString("Seed " + f.Seed + ": ")
		}
		fmt.Fprintf(&b, "%s\n\n![%s](%s)\n\n| bytes |", f.Title, f.ID, f.PNG)
		for i, s := range f.Series {
			fmt.Fprintf(&b, " %s [%s] |", s.Label, f.Unit)
			if i > 0 {
				fmt.Fprintf(&b, " %s / %s |", s.Name, f.Baseline)
			}
		}
		b.WriteString("\n|---:|")
		for i := range f.Series {
			b.WriteString("---:|")
			if i > 0 {
				b.WriteString("---:|")
			}
		}
		b.WriteString("\n")
		for k, p := range f.Series[0].Points {
			fmt.Fprintf(&b, "| %d |", p.Bytes)
			for i, s := range f.Series {
				if k >= len(s.Points) || s.Points[k].Bytes != p.Bytes {
					b.WriteString(" - |")
					if i > 0 {
						b.WriteString(" - |")
					}
					continue
				}
				fmt.Fprintf(&b, " %s |", figNum(s.Points[k].Value))
				if i > 0 {
					fmt.Fprintf(&b, " %.2fx |", s.Points[k].Ratio)
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// figNum prints a value with three significant digits or so.
func figNum(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
