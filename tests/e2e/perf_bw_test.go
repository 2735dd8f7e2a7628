package e2e

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPerfTCPBW runs `nuse perf tcp-bw` (bulk mode, with the checksum) on a
// tiny byte count in a namespace of its own: kernel loopback and NUSE on
// each engine of appEngines, side by side. It checks the output parses (a
// row per path and size, a ratio per engine and size), the JSON (every
// path, size and write count, positive figures) and the PNG. No timing is
// judged.
func TestPerfTCPBW(t *testing.T) {
	ns := perfNetns(t)
	js, pngf := filepath.Join(ns.dir, "bw.json"), filepath.Join(ns.dir, "bw.png")
	sizes := map[int]int{4096: 256, 65536: 16} // size -> writes, 1 MiB each
	out, err := ns.run(2*time.Minute, bin("nuse"), "perf", "tcp-bw", "--sizes", "4096,65536", "--bytes", "1M", "-V",
		"--engines", strings.Join(appEngines, ","), "--json", js, "--plot", pngf)
	t.Logf("nuse perf tcp-bw:\n%s", out)
	if err != nil {
		t.Fatalf("nuse perf tcp-bw: %v", err)
	}
	paths := perfPaths()
	for _, p := range paths {
		re := regexp.MustCompile(`(?m)^ ` + p + ` +(4096|65536) +(256|16) +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+\s*$`)
		if n := len(re.FindAllString(out, -1)); n != len(sizes) {
			t.Errorf("%d rows of path %s, want %d", n, p, len(sizes))
		}
		if p == "kernel" {
			continue
		}
		re = regexp.MustCompile(`(?m)^ ratio +(4096|65536) +BW avg +` + p + `/kernel = [0-9.]+x$`)
		if n := len(re.FindAllString(out, -1)); n != len(sizes) {
			t.Errorf("%d ratio lines for %s, want %d", n, p, len(sizes))
		}
	}

	var run struct {
		Mode, Metric string
		Params       map[string]string
		Series       []struct {
			Name string
			Rows []struct {
				Bytes   int     `json:"bytes"`
				Iters   int     `json:"iterations"`
				BWAvg   float64 `json:"bw_avg_mbs"`
				MsgRate float64 `json:"msg_rate_mpps"`
			}
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	if run.Mode != "tcp-bw" || run.Metric != "bw_avg_mbs" || run.Params["bytes"] != "1048576" || run.Params["verify"] != "true" {
		t.Errorf("json: mode %q, metric %q, params %v", run.Mode, run.Metric, run.Params)
	}
	if len(run.Series) != len(paths) {
		t.Fatalf("json: %d series, want %d (%v)", len(run.Series), len(paths), paths)
	}
	for i, s := range run.Series {
		if s.Name != paths[i] || len(s.Rows) != len(sizes) {
			t.Errorf("json series %d: %s with %d rows, want %s with %d", i, s.Name, len(s.Rows), paths[i], len(sizes))
			continue
		}
		for _, w := range s.Rows {
			if sizes[w.Bytes] != w.Iters || w.BWAvg <= 0 || w.MsgRate <= 0 {
				t.Errorf("json %s: row %+v", s.Name, w)
			}
		}
	}
	checkPNG(t, pngf)
}

// perfNetns is a namespace of the test's own for `nuse perf` TCP modes,
// which run bin/tcpperf.
func perfNetns(t *testing.T) *netns {
	requireRoot(t)
	if _, err := os.Stat(bin("tcpperf")); err != nil {
		t.Fatalf("%s missing: run 'make build' first", bin("tcpperf"))
	}
	return newNetns(t)
}

// perfPaths names the paths of `nuse perf --engines` over appEngines.
func perfPaths() []string {
	paths := []string{"kernel"}
	for _, e := range appEngines {
		paths = append(paths, "nuse-"+e)
	}
	return paths
}

// checkPNG fails the test unless f is a PNG of a plot's size.
func checkPNG(t *testing.T, f string) {
	t.Helper()
	r, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if img, err := png.Decode(r); err != nil || img.Bounds().Dx() < 300 {
		t.Errorf("%s: %v", f, err)
	}
}
