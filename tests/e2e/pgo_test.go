package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPGOProfileScript runs scripts/bench/pgo-profile.sh at tiny counts
// into a scratch file (never the committed cmd/nuse/default.pgo): each of
// its three daemons must write a profile, the merge must be a profile Go's
// pprof reads, with the daemon's serving path in it (a profile of
// something else would guide the build wrongly), and the script's
// namespace must be gone afterwards. No timing is judged.
func TestPGOProfileScript(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"redis-server", "redis-benchmark", "nginx", "wrk", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED LOUDLY: %s not installed (.ci/apt/base.list installs it)", tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("SKIPPED LOUDLY: no /dev/net/tun for the TAP workload: %v", err)
	}
	out := filepath.Join(t.TempDir(), "test.pgo")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", filepath.Join(repo, "scripts/bench/pgo-profile.sh"), "-n", "3000", "-d", "1", "-o", out)
	b, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("pgo-profile.sh: %v\n%s", err, b)
	}
	t.Logf("pgo-profile.sh:\n%s", b)
	if !strings.Contains(string(b), "from 3 profiles") {
		t.Errorf("want three profiles merged")
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-cum", out).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof cannot read the profile: %v\n%s", err, top)
	}
	if !regexp.MustCompile(`daemon/usock\.\(\*Session\)\.serve`).Match(top) {
		t.Errorf("the profile lacks the daemon's serving path:\n%s", top)
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); regexp.MustCompile(`nuse-pgo`).Match(ns) {
		t.Errorf("pgo-profile.sh left its namespace behind:\n%s", ns)
	}
}
