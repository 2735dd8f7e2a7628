package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestAppsBenchScript runs scripts/apps-bench.sh small and twice (-r 2):
// the table of medians must come out with a row per workload, the
// redis, nginx and TAP rows (the tools CI installs) with positive figures
// and a median ratio inside its range; a workload whose tools are
// missing must say it was skipped. No timing is judged.
func TestAppsBenchScript(t *testing.T) {
	md := filepath.Join(t.TempDir(), "apps.md")
	runScript(t, []string{"redis-server", "redis-benchmark", "nginx", "wrk"}, nil, "nuse-apps",
		"scripts/apps-bench.sh", "-e", "gvisor", "-n", "3000", "-d", "1", "-t", "1", "-m", "200", "-C", "", "-r", "2", "-o", md)
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	table := string(b)
	if !strings.Contains(table, "median of 2 runs") {
		t.Fatalf("no median table:\n%s", table)
	}
	// ... | daemon CPU | a core per party: ratio (range) (busiest) | server, client CPU: kernel -> NUSE |
	row := regexp.MustCompile(`(?m)^\| (.+?) \| ([0-9.e+]+) \S+ \| ([0-9.e+]+) \S+ \| ([0-9.]+) \(([0-9.]+)-([0-9.]+)\)[^|]*\| ([0-9.e+]+) \S+ \| ` +
		`([0-9.]+) \(([0-9.]+)-([0-9.]+)\) \((?:daemon|server|client)\) \| ([0-9.e+]+), ([0-9.e+]+) -> ([0-9.e+]+), ([0-9.e+]+) \S+ \|$`)
	got := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		got[m[1]] = m
	}
	for _, want := range []string{
		"redis-benchmark -c 20 SET", "redis-benchmark -c 20 GET", "nginx (2 workers) + wrk -c 32, 4 KiB",
		"redis-benchmark -c 20 GET, NUSE client -> kernel redis via TAP", "wrk -c 32 -> kernel nginx, 4 KiB, NUSE client via TAP",
	} {
		m, ok := got[want]
		if !ok {
			t.Errorf("no figures for %q in:\n%s", want, table)
			continue
		}
		v := func(i int) float64 { f, _ := strconv.ParseFloat(m[i], 64); return f }
		if v(2) <= 0 || v(3) <= 0 || v(7) <= 0 {
			t.Errorf("%s: kernel %s, NUSE %s, daemon CPU %s: want positive figures", want, m[2], m[3], m[7])
		}
		if v(4) < v(5) || v(4) > v(6) {
			t.Errorf("%s: median ratio %s outside its range %s-%s", want, m[4], m[5], m[6])
		}
		if v(8) <= 0 || v(8) < v(9) || v(8) > v(10) {
			t.Errorf("%s: with a core per party %s (%s-%s): want a positive median inside its range", want, m[8], m[9], m[10])
		}
		if v(11) <= 0 || v(12) <= 0 || v(13) <= 0 || v(14) <= 0 {
			t.Errorf("%s: server, client CPU %s, %s -> %s, %s: want positive figures", want, m[11], m[12], m[13], m[14])
		}
	}
	for _, tool := range []string{"node", "memcached", "iperf3"} {
		if _, err := os.Stat("/usr/bin/" + tool); err != nil && !strings.Contains(table, "not installed: "+tool) &&
			!strings.Contains(table, " "+tool+" (apt-get") {
			t.Errorf("%s is missing and the table does not say its row was skipped:\n%s", tool, table)
		}
	}
}
