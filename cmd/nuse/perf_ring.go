package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

func init() {
	registerPerf("ring-lat", "bare shim<->daemon command round trip next to a cache-line ping-pong", runPerfRing)
}

// runPerfRing puts the shim's command-ring round trip (a preloaded
// program's getsockname, answered by the daemon, both spinning) beside the
// physical floor: two processes bouncing one cache line between the same
// two CPUs. The private daemon is pinned to CPU A, the program to CPU B.
func runPerfRing(args []string) int {
	out, args, err := cutOutFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 2
	}
	fs := flag.NewFlagSet("nuse perf ring-lat", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: nuse perf ring-lat [flags]")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), outFlagsHelp)
	}
	iters := fs.Uint("n", 100000, "round trips per measurement")
	reps := fs.Int("r", 1, "repeat, alternating the two")
	cpus := fs.String("c", "0,1", "the two CPUs: A (daemon, first bouncer), B (program, second bouncer)")
	port := fs.Int("p", 18590, "TCP port the program binds on 127.0.0.1 (nothing is sent)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "nuse perf ring-lat: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	a, b, ok := strings.Cut(*cpus, ",")
	ca, errA := strconv.Atoi(a)
	cb, errB := strconv.Atoi(b)
	if !ok || errA != nil || errB != nil || ca < 0 || cb < 0 || ca == cb {
		fmt.Fprintf(os.Stderr, "nuse perf ring-lat: -c %q: want two different CPUs like 0,1\n", *cpus)
		return 2
	}
	if n := runtime.NumCPU(); ca >= n || cb >= n {
		fmt.Fprintf(os.Stderr, "nuse perf ring-lat: -c %s: this machine has CPUs 0..%d\n", *cpus, n-1)
		return 2
	}
	tool, self, err := perfTools("ringlat")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 1
	}
	sock, stop, err := privateDaemon("nuse perf", "", ca)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 1
	}
	defer stop()

	n := strconv.Itoa(int(*iters))
	runs := []struct {
		name string
		argv []string
	}{
		{"line", []string{tool, "line", "-n", n, "-c", *cpus}},
		{"cmd", []string{self, "run", "--sock", sock, "--rules", "tcp 127.0.0.0/8", "--",
			tool, "cmd", "-n", n, "-c", b, "127.0.0.1", strconv.Itoa(*port)}},
	}
	hdr, _ := exec.Command(tool, "header").Output()
	fmt.Print(string(hdr))
	typical := map[string]float64{}
	res := newPerfRun("ring-lat", "t_typical_ns")
	res.Params["cpus"] = *cpus
	labels := map[string]string{"line": "cache line ping-pong", "cmd": "shim<->daemon command"}
	for r := 0; r < *reps; r++ {
		for _, run := range runs {
			c := exec.Command(run.argv[0], run.argv[1:]...)
			c.Stderr = os.Stderr
			out, err := c.Output()
			if err != nil {
				fmt.Fprintf(os.Stderr, "nuse perf: %s failed: %v\n", run.name, err)
				return 1
			}
			line := strings.TrimRight(string(out), "\n")
			fmt.Println(line)
			// what, #iterations, t_min, t_typical, ...
			f := strings.Fields(line)
			if len(f) >= 4 {
				v, _ := strconv.ParseFloat(f[3], 64)
				typical[run.name] += v
			}
			// what, #iterations, t_min, t_typical, t_avg, 99%, t_max, clock (ns)
			if v, ok := floats(f[1:], 6); ok {
				s := res.series(run.name, labels[run.name])
				s.Rows = append(s.Rows, perfRow{Iters: int(v[0]), TMin: v[1], TTypical: v[2], TAvg: v[3], P99: v[4], TMax: v[5]})
			}
		}
	}
	if typical["line"] > 0 && typical["cmd"] > 0 {
		fmt.Printf(" ratio: command round trip / cache-line round trip (t_typical) = %.1fx\n", typical["cmd"]/typical["line"])
	}
	if err := out.emit(res); err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 1
	}
	return 0
}
