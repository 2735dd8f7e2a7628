package usock

import "testing"

// TestPickWorker checks the choice of a worker for a new session: the one
// with the fewest live sessions among those with room, and a new one
// while there are fewer than the maximum and each serves a live session
// -- a session whose program is gone (still lingering) is not load.
func TestPickWorker(t *testing.T) {
	for _, c := range []struct {
		name        string
		held, live  []int
		perWork, mx int
		i           int
		start       bool
	}{
		{"none yet", nil, nil, 64, 1, -1, true},
		{"one worker, one live session, room for one more worker", []int{1}, []int{1}, 64, 2, -1, true},
		{"one worker, full count of workers", []int{1}, []int{1}, 64, 1, 0, false},
		// a program that just ended (a readiness probe) lingers on the
		// second worker: the next program takes that worker, not the
		// first one's
		{"a gone session is no load", []int{1, 1}, []int{1, 0}, 64, 2, 1, false},
		{"fewest live", []int{3, 2, 4}, []int{3, 2, 1}, 64, 3, 2, false},
		{"full workers are skipped", []int{2, 2}, []int{0, 1}, 2, 2, -1, true},
		{"every worker full, no more allowed: a new one anyway", []int{1}, []int{1}, 1, 1, -1, true},
		{"an idle worker is taken before a new one", []int{0, 1}, []int{0, 1}, 64, 4, 0, false},
	} {
		i, start := pickWorker(c.held, c.live, c.perWork, c.mx)
		if i != c.i || start != c.start {
			t.Errorf("%s: pickWorker(%v, %v, %d, %d) = %d, %v; want %d, %v", c.name, c.held, c.live, c.perWork, c.mx, i, start, c.i, c.start)
		}
	}
}
