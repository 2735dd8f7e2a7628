package main

import (
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCutOutFlags(t *testing.T) {
	o, rest, err := cutOutFlags([]string{"127.0.0.1", "-s", "64", "--json", "a.json", "-plot=b.png", "--also", "c.json", "-n", "5"})
	if err != nil {
		t.Fatal(err)
	}
	if o.json != "a.json" || o.plot != "b.png" || !reflect.DeepEqual(o.also, []string{"c.json"}) {
		t.Errorf("flags: %+v", o)
	}
	if want := []string{"127.0.0.1", "-s", "64", "-n", "5"}; !reflect.DeepEqual(rest, want) {
		t.Errorf("rest %q, want %q", rest, want)
	}
	if _, _, err := cutOutFlags([]string{"--plot", "x.svg"}); err == nil {
		t.Error("--plot x.svg: no error")
	}
	if _, _, err := cutOutFlags([]string{"--json"}); err == nil {
		t.Error("--json without a file: no error")
	}
}

// A run's rows go to JSON and back, and both plot kinds draw a PNG.
func TestPerfRunJSONAndPlot(t *testing.T) {
	dir := t.TempDir()
	r := newPerfRun("tcp-lat", "t_typical_usec")
	for _, line := range []string{" 64 1000 10 90 12 13 2 40 80", " 4096 1000 11 91 14 15 2 41 81"} {
		row, ok := parseLatRow(strings.Fields(line))
		if !ok {
			t.Fatalf("parseLatRow(%q) failed", line)
		}
		k, n := r.series("kernel", "kernel loopback"), r.series("nuse", "NUSE")
		k.Rows = append(k.Rows, row)
		row.TTypical *= 3
		n.Rows = append(n.Rows, row, row) // two repetitions
	}
	if _, ok := parseBWRow(strings.Fields(" 64 5000 1.5 1.2 0.02")); !ok {
		t.Error("parseBWRow failed")
	}
	js, pngf := filepath.Join(dir, "a.json"), filepath.Join(dir, "a.png")
	if err := (outFlags{json: js, plot: pngf}).emit(r); err != nil {
		t.Fatal(err)
	}
	back, err := readPerfRun(js)
	if err != nil {
		t.Fatal(err)
	}
	sz, v := back.Series[1].bySize(back.Metric)
	if !reflect.DeepEqual(sz, []int{64, 4096}) || v[0] != 36 || v[1] != 42 {
		t.Errorf("nuse by size: %v %v", sz, v)
	}
	bars := newPerfRun("ring-lat", "t_typical_ns")
	bars.series("line", "cache line").Rows = []perfRow{{Iters: 10, TTypical: 130}}
	bars.series("cmd", "command").Rows = []perfRow{{Iters: 10, TTypical: 400}}
	barf := filepath.Join(dir, "b.png")
	if err := (outFlags{plot: barf, also: nil}).emit(bars); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pngf, barf} {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil || img.Bounds().Dx() < 300 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// tcp-bw's rows (perftest's bandwidth columns and the average in Gbit/s)
// parse, go to JSON and back with the bandwidth as the key column, and plot.
func TestPerfBWRows(t *testing.T) {
	dir := t.TempDir()
	r := newPerfRun("tcp-bw", "bw_avg_mbs")
	for _, c := range []struct {
		name, line string
	}{
		{"kernel", " 65536    4096        2113.27            2113.27            0.032246     16.906      "},
		{"nuse-gvisor", " 65536    4096        1056.50            1056.50            0.016121     8.452"},
		{"kernel", " 1048576  256         3000.00            3000.00            0.002861     24.000"},
		{"nuse-gvisor", " 1048576  256         1500.00            1500.00            0.001431     12.000"},
	} {
		row, ok := parseBWRow(strings.Fields(c.line))
		if !ok {
			t.Fatalf("parseBWRow(%q) failed", c.line)
		}
		r.series(c.name, c.name).Rows = append(r.series(c.name, c.name).Rows, row)
	}
	js, pngf := filepath.Join(dir, "bw.json"), filepath.Join(dir, "bw.png")
	if err := (outFlags{json: js, plot: pngf}).emit(r); err != nil {
		t.Fatal(err)
	}
	back, err := readPerfRun(js)
	if err != nil {
		t.Fatal(err)
	}
	if back.Mode != "tcp-bw" || len(back.Series) != 2 {
		t.Fatalf("read back: %+v", back)
	}
	sz, v := back.Series[1].bySize(back.Metric)
	if !reflect.DeepEqual(sz, []int{65536, 1 << 20}) || v[0] != 1056.50 || v[1] != 1500 {
		t.Errorf("nuse-gvisor by size: %v %v", sz, v)
	}
	if w := back.Series[0].Rows[0]; w.Iters != 4096 || w.MsgRate != 0.032246 || w.BWPeak != 2113.27 {
		t.Errorf("kernel's first row: %+v", w)
	}
	if y, what := metricAxis(back.Metric); !strings.Contains(y, "MB/s") || what != "bandwidth" {
		t.Errorf("axis of %s: %q, %q", back.Metric, y, what)
	}
	if _, err := os.Stat(pngf); err != nil {
		t.Error(err)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]uint64{"4096": 4096, "64K": 64 << 10, "256M": 256 << 20, "2G": 2 << 30,
		"2GiB": 2 << 30, "1mb": 1 << 20, " 8k ": 8 << 10, "0": 0} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1.5M", "12X", "99999999999T"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", in, got)
		}
	}
	for _, c := range []struct{ bytes, size, n, want uint }{
		{256 << 20, 65536, 0, 4096}, {100, 65536, 0, 1}, {1 << 40, 2, 0, bwMaxWrites}, {256 << 20, 65536, 7, 7},
	} {
		if got := bwWrites(uint64(c.bytes), c.size, c.n); got != c.want {
			t.Errorf("bwWrites(%d, %d, %d) = %d, want %d", c.bytes, c.size, c.n, got, c.want)
		}
	}
}
