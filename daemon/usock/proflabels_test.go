package usock

import (
	"bytes"
	"runtime/pprof"
	"strings"
	"testing"
)

// labelsHere is the "# labels:" line of the goroutine profile's record
// for the calling test's goroutine ("" if it has none).
func labelsHere(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatal(err)
	}
	// Records are separated by blank lines: a count line, "# labels: ..."
	// if any, then the stack.
	for _, rec := range strings.Split(b.String(), "\n\n") {
		if !strings.Contains(rec, "usock.TestProfLabels") {
			continue
		}
		for _, l := range strings.Split(rec, "\n") {
			if strings.HasPrefix(l, "# labels: ") {
				return strings.TrimPrefix(l, "# labels: ")
			}
		}
		return ""
	}
	t.Fatal("no goroutine record of this test in the profile")
	return ""
}

// TestProfLabels checks that a worker's goroutine carries its worker
// label, and the program's label during a session's turn only; and that
// off, nothing is labeled.
func TestProfLabels(t *testing.T) {
	defer pprof.SetGoroutineLabels(t.Context())
	off := newProfLabels(false, 3)
	off.session(&Session{ID: 1, Comm: "x", Pid: 2}, 1)
	off.done()
	if l := labelsHere(t); l != "" {
		t.Fatalf("labels off, the goroutine has %s", l)
	}

	p := newProfLabels(true, 3)
	if l := labelsHere(t); l != `{"worker":"3"}` {
		t.Fatalf("worker labels: %s", l)
	}
	s := &Session{ID: 7, Comm: "redis-server", Pid: 4242}
	for ver := uint64(1); ver <= 2; ver++ { // a new list version labels anew
		p.session(s, ver)
		if l := labelsHere(t); l != `{"program":"7 redis-server[4242]", "worker":"3"}` {
			t.Fatalf("in a session's turn (list %d): %s", ver, l)
		}
		p.done()
		if l := labelsHere(t); l != `{"worker":"3"}` {
			t.Fatalf("after a session's turn: %s", l)
		}
	}
	if len(p.sess) != 1 {
		t.Errorf("%d sessions' labels kept, want 1", len(p.sess))
	}
}
