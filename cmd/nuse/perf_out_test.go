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
