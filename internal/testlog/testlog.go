// Package testlog gives servers started by a test a logger that can never
// call into a finished test. A server's goroutines log at any time; the
// testing package forbids t.Logf once a test has returned, and f.Logf while
// a fuzz target runs (both are races the race detector reports). So lines
// go to the test only while that is allowed, and are held or dropped
// otherwise.
package testlog

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// maxHeld bounds the lines a fuzz test holds back for its failure report.
const maxHeld = 400

type logger struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool     // the test's cleanup has run: drop everything
	held []string // *testing.F: lines kept for the report
	lost int      // lines dropped from held
}

// Logf returns a printf-style logger that writes through tb with a
// timestamp. Call it before starting the server whose Close is registered
// with tb.Cleanup: cleanups run last-registered first, so the server's
// shutdown still logs, and the logger shuts after it. For a *testing.F the
// lines are held and printed only if the fuzz test fails.
func Logf(tb testing.TB) func(format string, args ...any) {
	l := &logger{tb: tb}
	tb.Cleanup(l.close)
	return l.logf
}

func (l *logger) logf(format string, args ...any) {
	line := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.done:
	case isFuzz(l.tb):
		if len(l.held) == maxHeld {
			l.held = l.held[1:]
			l.lost++
		}
		l.held = append(l.held, line)
	default:
		l.tb.Log(line)
	}
}

func (l *logger) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	if len(l.held) > 0 && l.tb.Failed() {
		if l.lost > 0 {
			l.tb.Logf("(%d earlier server log lines dropped)", l.lost)
		}
		for _, s := range l.held {
			l.tb.Log(s)
		}
	}
	l.held = nil
}

func isFuzz(tb testing.TB) bool {
	_, ok := tb.(*testing.F)
	return ok
}
