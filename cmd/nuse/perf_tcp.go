package main

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nuse-project/nuse/daemon/ctlclient"
)

func init() {
	registerPerf("tcp-lat", "64 B..64 KiB TCP ping-pong latency, kernel vs NUSE, same programs", func(a []string) int { return runPerfTCP("lat", a) })
	registerPerf("tcp-rate", "TCP send() message rate and bandwidth, kernel vs NUSE, same programs", func(a []string) int { return runPerfTCP("rate", a) })
	registerPerf("tcp-bw", "TCP bulk throughput (N bytes in SIZE-byte writes), kernel vs NUSE, same programs", func(a []string) int { return runPerfTCP("bw", a) })
	registerPerf("tcp-crr", "TCP connect/request/response/close time (a connection per transaction), kernel vs NUSE", func(a []string) int { return runPerfTCP("crr", a) })
}

// Bulk mode's defaults and bound: 256 MiB a size in 64 KiB writes, and at
// most 1M writes a size unless -n asks for more.
const (
	bwDefaultBytes = 256 << 20
	bwMaxWrites    = 1 << 20
)

// runPerfTCP runs tcpperf (plain sockets, unmodified) over kernel loopback
// and under NUSE (loopback claimed by the rules, so the traffic stays in the
// engine), alternating path per size, and prints perftest's columns with
// the NUSE/kernel ratio.
func runPerfTCP(mode string, args []string) int {
	out, args, err := cutOutFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 2
	}
	fs := flag.NewFlagSet("nuse perf tcp-"+mode, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: nuse perf tcp-%s [flags]\n", mode)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), outFlagsHelp)
	}
	defSize, top := uint(64), uint(65536)
	if mode == "bw" {
		defSize, top = 65536, 1<<20
	}
	size := fs.Uint("s", defSize, "message (write) size in bytes")
	all := fs.Bool("a", false, fmt.Sprintf("all sizes from 2 to %d", top))
	sizeList := fs.String("sizes", "", "these message sizes, comma-separated (instead of -s or -a)")
	engines := fs.String("engines", "", "one private daemon per engine, comma-separated (e.g. gvisor,kernel): a NUSE path per engine")
	iters := fs.Uint("n", 0, "iterations (lat), connections (crr), messages (rate) or writes (bw) per size (default 1000 / 1000 / 100000 / --bytes over the size)")
	var bytesFlag *string
	var verify *bool
	if mode == "bw" {
		bytesFlag = fs.String("bytes", "256M", fmt.Sprintf("bytes to send per size and path, suffix K, M or G (binary); at most %d writes unless -n", bwMaxWrites))
		verify = fs.Bool("V", false, "verify: both ends checksum the stream and the run fails if the server read other bytes (costs CPU at both ends)")
	}
	reps := fs.Int("r", 1, "repeat each measurement, alternating kernel and NUSE")
	sock := fs.String("sock", "", "use the daemon on this control socket (default: start a private one)")
	daemonArgs := fs.String("daemon-args", "", "flags for the private daemon (e.g. \"--spin 0s\")")
	port := fs.Int("p", 18515, "TCP port (also port+1 for NUSE)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *size < 1 || *size > 8<<20 || *reps < 1 || *port < 1 || *port > 65534 || *iters > math.MaxUint32 {
		fmt.Fprintln(os.Stderr, "nuse perf: -s must be 1..8388608, -r at least 1, -p 1..65534, -n at most 4294967295")
		return 2
	}
	var bulk uint64
	if mode == "bw" {
		if bulk, err = parseByteSize(*bytesFlag); err != nil || bulk == 0 {
			fmt.Fprintf(os.Stderr, "nuse perf: --bytes %q: want a positive size such as 4096, 64K, 256M, 2G\n", *bytesFlag)
			return 2
		}
	}
	tool, self, err := perfTools("tcpperf")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 1
	}
	sizes, err := perfSizes(*size, *all, *sizeList, top)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 2
	}
	const rules = "tcp 127.0.0.0/8"
	type path struct {
		name, label string
		port        int
		wrap        func(...string) []string
	}
	paths := []path{{"kernel", "kernel loopback", *port, func(a ...string) []string { return a }}}
	addNUSE := func(name, label, sock string) {
		paths = append(paths, path{name, label, *port + len(paths), func(argv ...string) []string {
			return append([]string{self, "run", "--sock", sock, "--rules", rules, "--"}, argv...)
		}})
	}
	switch {
	case *engines != "":
		if *sock != "" {
			fmt.Fprintln(os.Stderr, "nuse perf: --engines starts its own daemons: no --sock with it")
			return 2
		}
		for _, e := range strings.Split(*engines, ",") {
			s, stop, err := privateDaemon("nuse perf", "--engine "+e+" "+*daemonArgs, -1)
			if err != nil {
				fmt.Fprintln(os.Stderr, "nuse perf:", err)
				return 1
			}
			defer stop()
			addNUSE("nuse-"+e, "NUSE ("+e+" engine)", s)
		}
	case *sock == "":
		s, stop, err := privateDaemon("nuse perf", *daemonArgs, -1)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nuse perf:", err)
			return 1
		}
		defer stop()
		addNUSE("nuse", "NUSE", s)
	default:
		if !ctlclient.Ping(*sock) {
			fmt.Fprintf(os.Stderr, "nuse perf: no daemon answers on %s\n", *sock)
			return 1
		}
		addNUSE("nuse", "NUSE", *sock)
	}
	if *port+len(paths) > 65535 {
		fmt.Fprintln(os.Stderr, "nuse perf: -p too high for the paths")
		return 2
	}
	metric := map[string]string{"lat": "t_typical_usec", "crr": "t_typical_usec", "rate": "msg_rate_mpps", "bw": "bw_avg_mbs"}[mode]
	res := newPerfRun("tcp-"+mode, metric)
	if mode == "bw" {
		res.Params["bytes"] = strconv.FormatUint(bulk, 10)
		res.Params["verify"] = strconv.FormatBool(*verify)
	}
	res.Params["daemon_args"] = *daemonArgs
	res.Params["engines"] = *engines
	res.Params["reps"] = strconv.Itoa(*reps)
	for _, p := range paths {
		argv := p.wrap(tool, "server", "-b", "127.0.0.1", "-p", strconv.Itoa(p.port))
		srv := exec.Command(argv[0], argv[1:]...)
		out := &syncBuf{}
		srv.Stdout, srv.Stderr = out, out
		srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := srv.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "nuse perf:", err)
			return 1
		}
		defer func() { _ = syscall.Kill(-srv.Process.Pid, syscall.SIGTERM); _ = srv.Wait() }()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), "listening") {
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "nuse perf: %s server did not start:\n%s", p.name, out.String())
				return 1
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	n := *iters
	if n == 0 {
		n = map[string]uint{"lat": 1000, "crr": 1000, "rate": 100000}[mode]
	}
	pw := 7
	for _, p := range paths {
		pw = max(pw, len(p.name))
	}
	switch mode {
	case "lat", "crr":
		fmt.Printf(" %-*s %-8s %-11s %-11s %-11s %-11s %-11s %-11s %-11s %-11s\n", pw, "path", "#bytes", "#iterations",
			"t_min[usec]", "t_max[usec]", "t_typical", "t_avg[usec]", "t_stdev", "99%", "99.9%")
	case "bw":
		fmt.Printf(" %-*s %-8s %-11s %-18s %-18s %-12s %-12s\n", pw, "path", "#bytes", "#iterations", "BW peak[MB/sec]", "BW average[MB/sec]", "MsgRate[Mpps]", "BW avg[Gb/sec]")
	default:
		fmt.Printf(" %-*s %-8s %-11s %-18s %-18s %-12s\n", pw, "path", "#bytes", "#iterations", "BW peak[MB/sec]", "BW average[MB/sec]", "MsgRate[Mpps]")
	}
	rc := 0
	for _, s := range sizes {
		cnt := n
		if mode == "rate" && uint64(s)*uint64(cnt) > 256<<20 {
			cnt = uint((256 << 20) / uint64(s)) // keep every run bounded
		}
		if mode == "bw" {
			cnt = bwWrites(bulk, s, *iters)
		}
		key := map[string]float64{}
		for r := 0; r < *reps; r++ {
			for _, p := range paths {
				targs := []string{tool, mode, "-p", strconv.Itoa(p.port), "-s", strconv.Itoa(int(s)), "-n", strconv.Itoa(int(cnt))}
				if verify != nil && *verify {
					targs = append(targs, "-V")
				}
				argv := p.wrap(append(targs, "127.0.0.1")...)
				c := exec.Command(argv[0], argv[1:]...)
				c.Stderr = os.Stderr
				outb, err := c.Output()
				if err != nil {
					fmt.Fprintf(os.Stderr, "nuse perf: %s run failed: %v\n", p.name, err)
					rc = 1
					continue
				}
				lines := strings.Split(strings.TrimSpace(string(outb)), "\n")
				last := strings.Fields(lines[len(lines)-1])
				if len(last) < 5 {
					fmt.Fprintf(os.Stderr, "nuse perf: unexpected output from tcpperf:\n%s", outb)
					rc = 1
					continue
				}
				fmt.Printf(" %-*s%s\n", pw, p.name, lines[len(lines)-1])
				// t_typical (lat) and MsgRate (rate) are both the fifth
				// column; BW average (bw) the fourth.
				col := 4
				if mode == "bw" {
					col = 3
				}
				v, _ := strconv.ParseFloat(last[col], 64)
				key[p.name] += v
				row, ok := parseLatRow(last)
				if mode != "lat" && mode != "crr" {
					row, ok = parseBWRow(last)
				}
				if ok {
					ser := res.series(p.name, p.label)
					ser.Rows = append(ser.Rows, row)
				}
			}
		}
		for _, p := range paths[1:] {
			if key["kernel"] > 0 && key[p.name] > 0 {
				what := map[string]string{"lat": "t_typical ", "crr": "t_typical ", "rate": "MsgRate   ", "bw": "BW avg    "}[mode] + p.name + "/kernel"
				fmt.Printf(" %-*s %-8d %s = %.2fx\n", pw, "ratio", s, what, key[p.name]/key["kernel"])
			}
		}
	}
	if err := out.emit(res); err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		rc = 1
	}
	return rc
}

// bwWrites is how many size-byte writes bulk mode makes: -n if given, else
// bytes over the size, at least one and at most bwMaxWrites.
func bwWrites(bytes uint64, size, n uint) uint {
	if n > 0 {
		return n
	}
	return uint(max(1, min(bytes/uint64(size), bwMaxWrites)))
}

// parseByteSize reads a byte count with an optional binary suffix K, M, G
// or T (KiB, MiB, ...; "B" and "iB" after it are allowed): 4096, 64K, 256M,
// 2GiB.
func parseByteSize(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := 0
	if t != "" {
		if i := strings.IndexByte("KMGT", t[len(t)-1]); i >= 0 {
			shift = 10 * (i + 1)
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a byte count", s)
	}
	if v > math.MaxUint64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v << shift, nil
}

// perfSizes is the message sizes a mode runs: -s, or -a (powers of two from
// 2 to top), or a --sizes list.
func perfSizes(size uint, all bool, list string, top uint) ([]uint, error) {
	switch {
	case list != "":
		var out []uint
		for _, f := range strings.Split(list, ",") {
			v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
			if err != nil || v < 1 || v > 8<<20 {
				return nil, fmt.Errorf("--sizes: %q is not a size 1..8388608", f)
			}
			out = append(out, uint(v))
		}
		return out, nil
	case all:
		var out []uint
		for s := uint(2); s <= top; s *= 2 {
			out = append(out, s)
		}
		return out, nil
	}
	return []uint{size}, nil
}

// perfTools finds a benchmark program and this binary (which runs it under
// nuse run).
func perfTools(name string) (tool, self string, err error) {
	if tool, err = findTool(name); err != nil {
		return "", "", err
	}
	self, err = os.Executable()
	return tool, self, err
}

// findTool finds a helper program next to this binary or on $PATH.
func findTool(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found next to nuse or on $PATH (make build)", name)
}

// syncBuf collects a child's output while we read it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
