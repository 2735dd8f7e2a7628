package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// A perfRun is what one `nuse perf` mode measured, as --json writes it:
// every row it printed, per path (kernel, nuse, native, ...).
type perfRun struct {
	Mode   string            `json:"mode"`   // tcp-lat, uc-write-bw, ...
	Metric string            `json:"metric"` // the key column: t_typical_usec, msg_rate_mpps, ...
	Params map[string]string `json:"params,omitempty"`
	Host   perfHost          `json:"host"`
	Series []perfSeries      `json:"series"`
}

type perfHost struct {
	Time    string `json:"time"`
	CPUs    int    `json:"cpus"`
	Kernel  string `json:"kernel,omitempty"`
	Go      string `json:"go"`
	Load    string `json:"load_average,omitempty"` // at the start: how busy the shared machine was
	Comment string `json:"comment"`
}

// perfSeries is one path's rows, in the order they were measured (with -r,
// a size has one row per repetition).
type perfSeries struct {
	Name  string    `json:"name"`  // kernel, nuse, nuse-gvisor, native, via-daemon, line, cmd
	Label string    `json:"label"` // legend text
	Rows  []perfRow `json:"rows"`
}

// perfRow is one printed line: perftest's latency columns (µs; ring-lat's
// are ns) or its bandwidth columns.
type perfRow struct {
	Bytes    int     `json:"bytes"`
	Iters    int     `json:"iterations"`
	TMin     float64 `json:"t_min,omitempty"`
	TMax     float64 `json:"t_max,omitempty"`
	TTypical float64 `json:"t_typical,omitempty"`
	TAvg     float64 `json:"t_avg,omitempty"`
	TStdev   float64 `json:"t_stdev,omitempty"`
	P99      float64 `json:"p99,omitempty"`
	P999     float64 `json:"p999,omitempty"`
	BWPeak   float64 `json:"bw_peak_mbs,omitempty"`
	BWAvg    float64 `json:"bw_avg_mbs,omitempty"`
	MsgRate  float64 `json:"msg_rate_mpps,omitempty"`
}

func newPerfRun(mode, metric string) *perfRun {
	return &perfRun{Mode: mode, Metric: metric, Params: map[string]string{}, Host: thisHost()}
}

func thisHost() perfHost {
	h := perfHost{Time: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Go: runtime.Version(),
		Comment: "one run on a shared machine: compare the paths of this run (ratios), not absolute figures"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			h.Load = strings.Join(f[:3], " ")
		}
	}
	return h
}

// series returns the series called name, adding it if new.
func (r *perfRun) series(name, label string) *perfSeries {
	for i := range r.Series {
		if r.Series[i].Name == name {
			return &r.Series[i]
		}
	}
	r.Series = append(r.Series, perfSeries{Name: name, Label: label})
	return &r.Series[len(r.Series)-1]
}

// value is the row's key column.
func (w perfRow) value(metric string) float64 {
	switch metric {
	case "msg_rate_mpps":
		return w.MsgRate
	case "bw_avg_mbs":
		return w.BWAvg
	default:
		return w.TTypical
	}
}

// bySize averages the metric over the repetitions of each size.
func (s *perfSeries) bySize(metric string) (sizes []int, vals []float64) {
	sum, n := map[int]float64{}, map[int]int{}
	for _, w := range s.Rows {
		if _, ok := n[w.Bytes]; !ok {
			sizes = append(sizes, w.Bytes)
		}
		sum[w.Bytes] += w.value(metric)
		n[w.Bytes]++
	}
	sort.Ints(sizes)
	for _, z := range sizes {
		vals = append(vals, sum[z]/float64(n[z]))
	}
	return sizes, vals
}

// parseLatRow reads perftest's latency columns after #bytes: #iterations,
// t_min, t_max, t_typical, t_avg, t_stdev, 99%, 99.9%.
func parseLatRow(f []string) (perfRow, bool) {
	v, ok := floats(f, 9)
	if !ok {
		return perfRow{}, false
	}
	return perfRow{Bytes: int(v[0]), Iters: int(v[1]), TMin: v[2], TMax: v[3], TTypical: v[4], TAvg: v[5], TStdev: v[6], P99: v[7], P999: v[8]}, true
}

// parseBWRow reads perftest's bandwidth columns: #bytes, #iterations, BW
// peak, BW average, MsgRate.
func parseBWRow(f []string) (perfRow, bool) {
	v, ok := floats(f, 5)
	if !ok {
		return perfRow{}, false
	}
	return perfRow{Bytes: int(v[0]), Iters: int(v[1]), BWPeak: v[2], BWAvg: v[3], MsgRate: v[4]}, true
}

func floats(f []string, n int) ([]float64, bool) {
	if len(f) < n {
		return nil, false
	}
	v := make([]float64, n)
	for i := range v {
		var err error
		if _, err = fmt.Sscan(f[i], &v[i]); err != nil {
			return nil, false
		}
	}
	return v, true
}

func writeJSON(file string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

func readPerfRun(file string) (*perfRun, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var r perfRun
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &r, nil
}

// outFlags are --json, --plot and --also, which every perf mode takes.
type outFlags struct {
	json, plot string
	also       []string // earlier runs' JSON whose series join the plot
}

// cutOutFlags takes --json FILE, --plot FILE and --also FILE (one or two
// dashes, or =FILE) out of args, wherever they are, and leaves the rest to
// the mode's own parser.
func cutOutFlags(args []string) (outFlags, []string, error) {
	var o outFlags
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "json" && name != "plot" && name != "also") {
			rest = append(rest, a)
			continue
		}
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, nil, fmt.Errorf("-%s needs a file name", name)
			}
			i++
			val = args[i]
		}
		switch name {
		case "json":
			o.json = val
		case "plot":
			o.plot = val
		case "also":
			o.also = append(o.also, val)
		}
	}
	if o.plot != "" && !strings.HasSuffix(strings.ToLower(o.plot), ".png") {
		return o, nil, errors.New("--plot writes PNG: give a FILE.png")
	}
	return o, rest, nil
}

const outFlagsHelp = `
every mode also takes:
  --json FILE      write what was measured (every row, per path) as JSON
  --plot FILE.png  plot the key column against message size, all paths on the same axes
  --also FILE      add the series of an earlier run's --json to the plot (repeatable)
`

// emit writes r as --json and --plot ask.
func (o outFlags) emit(r *perfRun) error {
	if o.json != "" {
		if err := writeJSON(o.json, r); err != nil {
			return err
		}
	}
	if o.plot == "" {
		return nil
	}
	fig := r.figure()
	for _, f := range o.also {
		other, err := readPerfRun(f)
		if err != nil {
			return err
		}
		if other.Metric != r.Metric {
			return fmt.Errorf("--also %s: it measured %s, this run %s", f, other.Metric, r.Metric)
		}
		fig.Lines = append(other.figure().Lines, fig.Lines...)
	}
	return fig.save(o.plot)
}

// metricAxis is the y axis label and the title of a metric.
func metricAxis(metric string) (ylabel, what string) {
	switch metric {
	case "msg_rate_mpps":
		return "message rate [M messages/s]", "message rate"
	case "bw_avg_mbs":
		return "bandwidth [MB/s]", "bandwidth"
	case "t_typical_ns":
		return "round trip, typical [ns]", "round trip"
	default:
		return "latency, median [µs]", "median latency"
	}
}

// figure is r's key column against message size, a line per path.
func (r *perfRun) figure() *figure {
	y, what := metricAxis(r.Metric)
	f := &figure{Title: fmt.Sprintf("nuse perf %s: %s", r.Mode, what), Y: y, X: "message size [bytes]"}
	for i := range r.Series {
		s := &r.Series[i]
		sz, v := s.bySize(r.Metric)
		f.Lines = append(f.Lines, figLine{Label: s.Label, Sizes: sz, Vals: v})
	}
	// ring-lat has no message sizes: a bar per path.
	f.Bars = r.Mode == "ring-lat"
	if f.Bars {
		f.Title = "nuse perf ring-lat: round trip between the two CPUs"
	}
	return f
}

// A figure is one plot: lines of value against message size.
type figure struct {
	Title, X, Y string
	Lines       []figLine
	Bars        bool // nominal x (one bar per line), for modes without sizes
}

type figLine struct {
	Label string
	Sizes []int
	Vals  []float64
}

var figColors = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, // blue: the kernel / native
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, // red: NUSE
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, // green: NUSE, another engine
	color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	color.RGBA{0x94, 0x67, 0xbd, 0xff},
	color.RGBA{0x8c, 0x56, 0x4b, 0xff},
}

// save draws f into a PNG: log2 message sizes on x, lines with points, a
// legend.
func (f *figure) save(file string) error {
	p := plot.New()
	p.Title.Text = f.Title
	p.X.Label.Text = f.X
	p.Y.Label.Text = f.Y
	p.Legend.Top = true
	// Rates fall with size, latencies rise: the legend goes where the
	// lines are not.
	p.Legend.Left = !strings.Contains(f.Y, "rate")
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(-8), vg.Points(-4)
	if p.Legend.Left {
		p.Legend.XOffs = vg.Points(8)
	}
	if f.Bars {
		return f.saveBars(p, file)
	}
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks{}
	logY := false
	lo, hi := math.Inf(1), 0.0
	for _, l := range f.Lines {
		for _, v := range l.Vals {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	// Head room above the lines for the legend.
	if hi > 0 && hi/lo > 50 {
		logY = true
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min, p.Y.Max = lo/1.5, hi*math.Pow(hi/lo, 0.35)
	} else if hi > 0 {
		p.Y.Min, p.Y.Max = 0, hi*1.35
	}
	p.Add(plotter.NewGrid())
	for i, l := range f.Lines {
		var xy plotter.XYs
		for k, s := range l.Sizes {
			if l.Vals[k] > 0 || !logY {
				xy = append(xy, plotter.XY{X: float64(max(s, 1)), Y: l.Vals[k]})
			}
		}
		if len(xy) == 0 {
			continue
		}
		line, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		c := figColors[i%len(figColors)]
		line.Color, line.Width = c, vg.Points(1.5)
		pts.Color, pts.Shape, pts.Radius = c, shapes[i%len(shapes)], vg.Points(3)
		p.Add(line, pts)
		p.Legend.Add(l.Label, line, pts)
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, file)
}

var shapes = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.CrossGlyph{}, draw.PlusGlyph{}, draw.RingGlyph{}}

func (f *figure) saveBars(p *plot.Plot, file string) error {
	p.Add(plotter.NewGrid())
	var names []string
	w := vg.Points(40)
	for i, l := range f.Lines {
		names = append(names, l.Label)
		vals := make(plotter.Values, len(f.Lines))
		if len(l.Vals) > 0 {
			vals[i] = l.Vals[0]
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		b.Color = figColors[i%len(figColors)]
		b.LineStyle.Width = 0
		p.Add(b)
	}
	p.NominalX(names...)
	p.X.Label.Text = ""
	p.Y.Min = 0
	return p.Save(6*vg.Inch, 4*vg.Inch, file)
}

// sizeTicks labels powers of two as 2, 64, 1K, 64K, 1M.
type sizeTicks struct{}

func (sizeTicks) Ticks(min, max float64) []plot.Tick {
	var t []plot.Tick
	step := 1
	if max/min > 1<<12 {
		step = 2
	}
	i := 0
	for v := 1.0; v <= max*1.0001; v *= 2 {
		if v >= min*0.9999 {
			lab := ""
			if i%step == 0 {
				lab = sizeLabel(int(v))
			}
			t = append(t, plot.Tick{Value: v, Label: lab})
			i++
		}
	}
	return t
}

func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}
