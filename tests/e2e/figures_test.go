package e2e

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPerfFigures runs `nuse perf figures --quick` (its own namespace and
// daemons) and checks what it writes: four PNGs that decode, figures.json
// with every figure, path and size and positive values, and figures.md with
// a table row per size in each figure. No timing is judged.
func TestPerfFigures(t *testing.T) {
	requireRoot(t)
	for _, b := range []string{"tcpperf"} {
		if _, err := os.Stat(bin(b)); err != nil {
			t.Fatalf("%s missing: run 'make build' first", bin(b))
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	sizes := []int{64, 4096}
	c := exec.CommandContext(ctx, bin("nuse"), "perf", "figures", "--quick", "--sizes", "64,4096", dir)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("nuse perf figures: %v\n%s", err, out)
	}
	t.Logf("nuse perf figures --quick:\n%s", out)

	var doc struct {
		Sizes   []int `json:"sizes"`
		Figures []struct {
			ID       string `json:"id"`
			PNG      string `json:"png"`
			Metric   string `json:"metric"`
			Baseline string `json:"baseline"`
			Series   []struct {
				Name   string `json:"name"`
				Label  string `json:"label"`
				Points []struct {
					Bytes int     `json:"bytes"`
					Value float64 `json:"value"`
					Ratio float64 `json:"ratio"`
				} `json:"points"`
			} `json:"series"`
		} `json:"figures"`
		Runs []struct {
			Mode   string `json:"mode"`
			Series []struct {
				Rows []map[string]float64 `json:"rows"`
			} `json:"series"`
		} `json:"runs"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "figures.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("figures.json: %v", err)
	}
	want := map[string]int{"uc-msgrate": 2, "uc-latency": 2, "tcp-msgrate": 4, "tcp-latency": 4} // paths per figure (TCP: kernel and 3 engines)
	if len(doc.Figures) != len(want) || len(doc.Runs) != len(want) {
		t.Fatalf("figures.json: %d figures and %d runs, want %d of each", len(doc.Figures), len(doc.Runs), len(want))
	}
	md, err := os.ReadFile(filepath.Join(dir, "figures.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := strings.Split(string(md), "\n## ")[1:]
	if len(sections) != len(want) {
		t.Fatalf("figures.md: %d sections, want %d:\n%s", len(sections), len(want), md)
	}
	for i, f := range doc.Figures {
		if want[f.ID] != len(f.Series) {
			t.Errorf("figure %q: %d paths, want %d", f.ID, len(f.Series), want[f.ID])
		}
		if f.Baseline != f.Series[0].Name {
			t.Errorf("figure %q: baseline %q is not the first path %q", f.ID, f.Baseline, f.Series[0].Name)
		}
		for k, s := range f.Series {
			if len(s.Points) != len(sizes) {
				t.Errorf("figure %q, %s: %d points, want %d", f.ID, s.Name, len(s.Points), len(sizes))
				continue
			}
			for j, p := range s.Points {
				if p.Bytes != sizes[j] || p.Value <= 0 || (k > 0 && p.Ratio <= 0) {
					t.Errorf("figure %q, %s: point %+v (want %d bytes, a positive value and ratio)", f.ID, s.Name, p, sizes[j])
				}
			}
		}
		pf, err := os.Open(filepath.Join(dir, f.PNG))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(pf)
		pf.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.PNG, err)
		}
		if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 200 || r.Dx() > 4000 || r.Dy() > 4000 {
			t.Errorf("%s: %dx%d pixels", f.PNG, r.Dx(), r.Dy())
		}
		sec := sections[i]
		if !strings.Contains(sec, "("+f.PNG+")") {
			t.Errorf("figures.md section %d does not show %s", i, f.PNG)
		}
		for _, sz := range sizes {
			if n := strings.Count(sec, "\n| "+strconv.Itoa(sz)+" |"); n != 1 {
				t.Errorf("figures.md, %s: %d rows for %d bytes, want 1", f.ID, n, sz)
			}
		}
		if !strings.Contains(sec, "/ "+f.Baseline+" |") {
			t.Errorf("figures.md, %s: no ratio column", f.ID)
		}
	}
}
