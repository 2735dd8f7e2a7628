package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPerfTCPCRR runs `nuse perf tcp-crr` (a connection per transaction:
// connect, request, answer, the server's close, the client's close) on a
// few connections per size in a namespace of its own, kernel loopback and
// NUSE on each engine of appEngines. tcpperf itself fails the run when an
// answer is short, longer than asked, or not followed by the server's EOF,
// so every row stands for that many whole transactions. It checks the
// output (a row per path and size, a ratio per engine and size), the JSON
// and the PNG. No timing is judged.
func TestPerfTCPCRR(t *testing.T) {
	ns := perfNetns(t)
	js, pngf := filepath.Join(ns.dir, "crr.json"), filepath.Join(ns.dir, "crr.png")
	const conns = 200
	out, err := ns.run(2*time.Minute, bin("nuse"), "perf", "tcp-crr", "--sizes", "64,4096", "-n", "200",
		"--engines", strings.Join(appEngines, ","), "--json", js, "--plot", pngf)
	t.Logf("nuse perf tcp-crr:\n%s", out)
	if err != nil {
		t.Fatalf("nuse perf tcp-crr: %v", err)
	}
	paths := perfPaths()
	num := ` +[0-9.]+`
	for _, p := range paths {
		re := regexp.MustCompile(`(?m)^ ` + p + ` +(64|4096) +200` + strings.Repeat(num, 7) + `\s*$`)
		if n := len(re.FindAllString(out, -1)); n != 2 {
			t.Errorf("%d rows of path %s, want 2", n, p)
		}
		if p == "kernel" {
			continue
		}
		re = regexp.MustCompile(`(?m)^ ratio +(64|4096) +t_typical +` + p + `/kernel = [0-9.]+x$`)
		if n := len(re.FindAllString(out, -1)); n != 2 {
			t.Errorf("%d ratio lines for %s, want 2", n, p)
		}
	}

	var run struct {
		Mode, Metric string
		Series       []struct {
			Name string
			Rows []struct {
				Bytes    int     `json:"bytes"`
				Iters    int     `json:"iterations"`
				TMin     float64 `json:"t_min"`
				TTypical float64 `json:"t_typical"`
				TMax     float64 `json:"t_max"`
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
	if run.Mode != "tcp-crr" || run.Metric != "t_typical_usec" {
		t.Errorf("json: mode %q, metric %q", run.Mode, run.Metric)
	}
	if len(run.Series) != len(paths) {
		t.Fatalf("json: %d series, want %d (%v)", len(run.Series), len(paths), paths)
	}
	for i, s := range run.Series {
		if s.Name != paths[i] || len(s.Rows) != 2 {
			t.Errorf("json series %d: %s with %d rows, want %s with 2", i, s.Name, len(s.Rows), paths[i])
			continue
		}
		for _, w := range s.Rows {
			if (w.Bytes != 64 && w.Bytes != 4096) || w.Iters != conns || w.TMin <= 0 || w.TMin > w.TTypical || w.TTypical > w.TMax {
				t.Errorf("json %s: row %+v", s.Name, w)
			}
		}
	}
	checkPNG(t, pngf)
}
