package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Issue 11: the conformance program (tests/c/conform.c) runs its table of
// socket-API cases over the kernel and under the preload (claimed
// loopback), and the two outputs are diffed line by line. Every difference
// fails the test unless tests/conform/known-differences.txt lists the case
// (the test then says so loudly); a listed case that now matches fails too,
// so the list shrinks as the shim is fixed. The ASan/UBSan shim runs the
// same program against the same list.

const loopRules = "tcp 127.0.0.0/8; tcp [::1]"

var knownFile = filepath.Join(repo, "tests", "conform", "known-differences.txt")

// conformOut is one run of the program: case name -> its result line.
type conformOut struct {
	order []string
	line  map[string]string
}

var caseLine = regexp.MustCompile(`^([a-z][a-z0-9_]*):(.*)$`)

func parseConform(out string) (*conformOut, error) {
	c := &conformOut{line: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := caseLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if _, dup := c.line[m[1]]; dup {
			return nil, fmt.Errorf("case %s printed twice", m[1])
		}
		c.order = append(c.order, m[1])
		c.line[m[1]] = strings.TrimSpace(m[2])
	}
	if len(c.order) == 0 {
		return nil, fmt.Errorf("no case lines in the output")
	}
	return c, nil
}

// knownDiff is one row of known-differences.txt: NAME WHY...
type knownDiff struct{ name, why string }

func loadKnown(t *testing.T) map[string]knownDiff {
	t.Helper()
	b, err := os.ReadFile(knownFile)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]knownDiff{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			t.Fatalf("%s:%d: want NAME WHY, got %q", knownFile, i+1, l)
		}
		known[f[0]] = knownDiff{f[0], strings.Join(f[1:], " ")}
	}
	return known
}

// issueCase names the issue 11 case a conform case belongs to (iNN_...).
func issueCase(name string) string {
	if m := regexp.MustCompile(`^i0*([0-9]+)_`).FindStringSubmatch(name); m != nil {
		return "issue 11 case " + m[1]
	}
	return "issue 11"
}

// runConform runs the conformance program in the namespace (under nuse run
// with rules when rules is set) and returns its case lines.
func (ns *netns) runConform(t *testing.T, rules string, asan bool, base int, extra ...string) *conformOut {
	t.Helper()
	argv := append([]string{bin("conform"), "-p", fmt.Sprint(base)}, extra...)
	if rules != "" {
		pre := []string{bin("nuse"), "run", "--sock", ns.sock(), "--rules", rules}
		if asan {
			requireASanShim(t)
			pre = append(pre, "--asan")
		}
		argv = append(append(pre, "--"), argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	c := ns.cmd(ctx, argv...)
	c.Stdout, c.Stderr = &stdout, &stderr
	start := time.Now()
	err := c.Run()
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(argv, " "), err, stdout.String(), stderr.String())
	}
	t.Logf("%s: %.1f s", strings.Join(argv, " "), time.Since(start).Seconds())
	if s := strings.TrimSpace(stderr.String()); s != "" {
		if len(s) > 4000 {
			s = s[:4000] + "\n..."
		}
		t.Logf("stderr:\n%s", s)
	}
	out, err := parseConform(stdout.String())
	if err != nil {
		t.Fatalf("%v:\n%s", err, stdout.String())
	}
	return out
}

// reporter is what compareConform needs of a *testing.T.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// compareConform diffs a NUSE run against the kernel run. strict: a listed
// case that matches fails (the list must be trimmed as fixes land).
func compareConform(t reporter, kernel, nuse *conformOut, known map[string]knownDiff, strict bool) {
	t.Helper()
	var same, accepted, unexpected, nowMatch int
	for _, name := range kernel.order {
		k := kernel.line[name]
		n, ok := nuse.line[name]
		if !ok {
			n = "<no line: the program stopped before this case>"
		}
		kd, listed := known[name]
		switch {
		case k == n && listed && strict:
			nowMatch++
			t.Errorf("NOW MATCHES: %s is listed in tests/conform/known-differences.txt (%s) but matches the kernel now: remove it from the list\n    both:   %s",
				name, kd.why, k)
		case k == n && listed:
			t.Logf("listed but matches here: %s: %s", name, k)
			same++
		case k == n:
			same++
		case listed:
			accepted++
			t.Logf("KNOWN DIFFERENCE (%s): %s: %s\n    kernel: %s\n    nuse:   %s", issueCase(name), name, kd.why, k, n)
		default:
			unexpected++
			t.Errorf("DIFFERENCE (%s): %s is not in tests/conform/known-differences.txt\n    kernel: %s\n    nuse:   %s",
				issueCase(name), name, k, n)
		}
	}
	for _, name := range nuse.order {
		if _, ok := kernel.line[name]; !ok {
			t.Errorf("case %s ran under NUSE only", name)
		}
	}
	t.Logf("%d cases: %d match the kernel, %d known differences, %d unexpected differences, %d listed but matching",
		len(kernel.order), same, accepted, unexpected, nowMatch)
}

func TestConform(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(bin("conform")); err != nil {
		t.Fatalf("%s missing: run 'make build'", bin("conform"))
	}
	known := loadKnown(t)
	ns := newNetns(t)
	ns.startDaemon()

	kernel := ns.runConform(t, "", false, 20000)
	for _, name := range kernel.order {
		// On the kernel every case must run to its end: a crash, hang or
		// exit there is a bug of the program, not of NUSE.
		if l := kernel.line[name]; strings.Contains(l, "| ") {
			t.Fatalf("over the kernel, %s did not finish: %s", name, l)
		}
	}
	for name := range known {
		if _, ok := kernel.line[name]; !ok {
			t.Errorf("known-differences.txt lists %s, which the program does not have", name)
		}
	}

	t.Run("nuse-loopback", func(t *testing.T) {
		before := len(sessionsOf(ns.stats(), "conform"))
		nuse := ns.runConform(t, loopRules, false, 21000)
		if n := len(sessionsOf(ns.stats(), "conform")); n <= before {
			t.Fatalf("the conform cases opened no NUSE session")
		}
		compareConform(t, kernel, nuse, known, true)
	})
	t.Run("nuse-loopback-asan", func(t *testing.T) {
		// The sanitizer build can differ in timing only: the same list
		// covers it, and a listed case that happens to match is fine.
		nuse := ns.runConform(t, loopRules, true, 22000)
		compareConform(t, kernel, nuse, known, false)
	})
	t.Run("tcp_semantics", func(t *testing.T) {
		// The existing semantics checks, kernel vs NUSE: the same checks,
		// with the same verdicts.
		args := []string{bin("tcp_semantics"), "-4", "127.0.0.1", "-6", "::1", "-p"}
		k, err := ns.run(3*time.Minute, append(args, "17800")...)
		if err != nil {
			t.Fatalf("tcp_semantics over the kernel: %v\n%s", err, k)
		}
		n, err := ns.run(3*time.Minute, ns.nuseRun(loopRules, append(args, "17900")...)...)
		if err != nil {
			t.Errorf("tcp_semantics under NUSE: %v", err)
		}
		ks, ns2 := semanticsVerdicts(k), semanticsVerdicts(n)
		if len(ks.order) == 0 {
			t.Fatalf("no checks in the kernel output:\n%s", k)
		}
		for _, key := range ks.order {
			if ks.line[key] != ns2.line[key] {
				t.Errorf("tcp_semantics %q: kernel %s, nuse %q", key, ks.line[key], ns2.line[key])
			}
		}
		if len(ns2.order) != len(ks.order) {
			t.Errorf("tcp_semantics: %d checks over the kernel, %d under NUSE\nnuse output:\n%s", len(ks.order), len(ns2.order), n)
		}
		t.Logf("tcp_semantics: %d checks compared", len(ks.order))
	})
}

// semanticsVerdicts maps "FAMILY CHECK" to PASS/FAIL in tcp_semantics's
// output ("%s %-5s %-40s %s": verdict, family, check, detail).
func semanticsVerdicts(out string) semOut {
	s := semOut{line: map[string]string{}}
	for _, l := range strings.Split(out, "\n") {
		if len(l) < 12 || (!strings.HasPrefix(l, "PASS ") && !strings.HasPrefix(l, "FAIL ")) {
			continue
		}
		end := 51
		if end > len(l) {
			end = len(l)
		}
		key := strings.Join(strings.Fields(l[5:end]), " ")
		if _, dup := s.line[key]; !dup {
			s.order = append(s.order, key)
		}
		s.line[key] = l[:4]
	}
	return s
}

type semOut struct {
	order []string
	line  map[string]string
}

// recorder is a reporter that keeps what it was told.
type recorder struct{ errors, logs []string }

func (r *recorder) Helper()                   {}
func (r *recorder) Errorf(f string, a ...any) { r.errors = append(r.errors, fmt.Sprintf(f, a...)) }
func (r *recorder) Logf(f string, a ...any)   { r.logs = append(r.logs, fmt.Sprintf(f, a...)) }
func (r *recorder) has(list []string, s string) bool {
	for _, l := range list {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// The comparison itself (no root needed): an unlisted difference fails, a
// listed one is accepted loudly, a listed case that matches fails when
// strict, and the list file parses and names only cases with iNN_/keep_
// names.
func TestConformCompare(t *testing.T) {
	kernel, _ := parseConform("a_same: x=1\ni04_listed: recv=1:x\ni13_unlisted: v=5\ni11_fixed: poll=IN|RDHUP\n")
	nuse, _ := parseConform("a_same: x=1\ni04_listed: close=0 | crashed SEGV\ni13_unlisted: v=0\ni11_fixed: poll=IN|RDHUP\n")
	known := map[string]knownDiff{"i04_listed": {"i04_listed", "crashes"}, "i11_fixed": {"i11_fixed", "no RDHUP"}}
	r := &recorder{}
	compareConform(r, kernel, nuse, known, true)
	if len(r.errors) != 2 || !r.has(r.errors, "DIFFERENCE (issue 11 case 13): i13_unlisted") || !r.has(r.errors, "NOW MATCHES: i11_fixed") {
		t.Fatalf("strict: want an unlisted difference and a now-matching case, got %q", r.errors)
	}
	if !r.has(r.logs, "KNOWN DIFFERENCE (issue 11 case 4): i04_listed: crashes") {
		t.Fatalf("the known difference was not reported: %q", r.logs)
	}
	r = &recorder{}
	compareConform(r, kernel, nuse, known, false)
	if len(r.errors) != 1 {
		t.Fatalf("lenient: want only the unlisted difference, got %q", r.errors)
	}
	for name := range loadKnown(t) {
		if !regexp.MustCompile(`^(i[0-9]{2}|keep)_[a-z0-9_]+$`).MatchString(name) {
			t.Errorf("known-differences.txt: %q is not a case name", name)
		}
	}
}
