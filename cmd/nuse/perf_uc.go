package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	_ "github.com/nuse-project/nuse/uc/link" // netdev kind "uc"
	"github.com/nuse-project/nuse/uc/perftest"
)

// The UC channel's benchmarks (perftest's ib_write_lat / ib_write_bw over
// uc). The verbs backend is linked in only when built with -tags verbs.
func init() {
	registerPerf("uc-write-lat", "RDMA WRITE latency over a UC QP (ib_write_lat -c UC)", func(args []string) int {
		return runPerfUC("lat", args)
	})
	registerPerf("uc-write-bw", "RDMA WRITE bandwidth and message rate over a UC QP (ib_write_bw -c UC)", func(args []string) int {
		return runPerfUC("bw", args)
	})
}

// runPerfUC runs perftest as it is and, for --json/--plot, reads back the
// rows it printed. Only the client prints rows (as perftest's client
// does); one run is one path, native or --via-daemon: --also puts an
// earlier run's series on the same plot.
func runPerfUC(mode string, args []string) int {
	out, args, err := cutOutFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 2
	}
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			rc := perftest.Run(mode, args, os.Stdout, os.Stderr)
			fmt.Fprint(os.Stderr, outFlagsHelp)
			return rc
		}
	}
	var printed bytes.Buffer
	w := io.Writer(os.Stdout)
	if out.json != "" || out.plot != "" {
		w = io.MultiWriter(os.Stdout, &printed)
	}
	if rc := perftest.Run(mode, args, w, os.Stderr); rc != 0 || (out.json == "" && out.plot == "") {
		return rc
	}
	metric := map[string]string{"lat": "t_typical_usec", "bw": "msg_rate_mpps"}[mode]
	res := newPerfRun("uc-write-"+mode, metric)
	via, events, backend := ucFlags(args)
	res.Params["backend"] = backend
	res.Params["completion"] = map[bool]string{false: "polling", true: "events"}[events]
	res.Params["args"] = strings.Join(args, " ")
	name, label := "native", "native RDMA WRITE ("+backend+")"
	if via {
		name, label = "nuse", "NUSE (via the daemon)"
	}
	if events {
		label += ", events"
	}
	ser := res.series(name, label)
	for _, line := range strings.Split(printed.String(), "\n") {
		if len(line) < 2 || line[0] != ' ' || line[1] < '0' || line[1] > '9' {
			continue
		}
		row, ok := parseLatRow(strings.Fields(line))
		if mode == "bw" {
			row, ok = parseBWRow(strings.Fields(line))
		}
		if ok {
			ser.Rows = append(ser.Rows, row)
		}
	}
	if len(ser.Rows) == 0 {
		fmt.Fprintln(os.Stderr, "nuse perf: no rows to write (the server side prints none: give --json/--plot to the client)")
	}
	if err := out.emit(res); err != nil {
		fmt.Fprintln(os.Stderr, "nuse perf:", err)
		return 1
	}
	return 0
}

// ucFlags picks --via-daemon, -e and --backend out of perftest's
// arguments, for the labels.
func ucFlags(args []string) (via, events bool, backend string) {
	backend = "soft"
	for i, a := range args {
		name, val, has := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		on := !has || val == "true" || val == "1"
		switch name {
		case "via-daemon":
			via = on
		case "e", "events":
			events = on
		case "backend":
			if has {
				backend = val
			} else if i+1 < len(args) {
				backend = args[i+1]
			}
		}
	}
	return
}
