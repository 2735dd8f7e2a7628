package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPGOProfileScript runs scripts/bench/pgo-profile.sh at tiny counts
// into a scratch file (never the committed cmd/nuse/default.pgo): each of
// its three daemons must write a profile, the merge must be a profile Go's
// pprof reads, with the daemon's serving path in it (a profile of
// something else would guide the build wrongly), and the script's
// namespace must be gone afterwards. No timing is judged.
func TestPGOProfileScript(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("SKIPPED LOUDLY: no /dev/net/tun for the TAP workload: %v", err)
	}
	out := filepath.Join(t.TempDir(), "test.pgo")
	b := runScript(t, []string{"redis-server", "redis-benchmark", "nginx", "wrk", "go"}, nil, "nuse-pgo",
		"scripts/bench/pgo-profile.sh", "-n", "3000", "-d", "1", "-o", out)
	if !strings.Contains(b, "from 3 profiles") {
		t.Errorf("want three profiles merged")
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-cum", out).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof cannot read the profile: %v\n%s", err, top)
	}
	if !regexp.MustCompile(`daemon/usock\.\(\*Session\)\.serve`).Match(top) {
		t.Errorf("the profile lacks the daemon's serving path:\n%s", top)
	}
}
