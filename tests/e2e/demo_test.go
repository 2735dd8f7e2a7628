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

// TestDemo runs scripts/demo.sh (make demo, the README's main job) with a
// small file and one transfer per path: every transfer must arrive intact
// (sha256), each table must print its NUSE/kernel ratio, and the demo's
// namespace must be gone afterwards. No figure is judged.
func TestDemo(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"python3", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED LOUDLY: %s not installed (.ci/apt/base.list installs it)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", filepath.Join(repo, "scripts/demo.sh"))
	c.Env = append(os.Environ(), "DEMO_SIZE_MB=4", "DEMO_REPS=1")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	t.Logf("demo.sh:\n%s", out)
	s := string(out)
	if n := regexp.MustCompile(`(?m)^ (kernel|nuse|mixed): .* ok$`).FindAllString(s, -1); len(n) != 4 || strings.Contains(s, "CORRUPT") {
		t.Errorf("want four intact transfers (kernel, nuse, two mixed), got %d", len(n))
	}
	for _, want := range []string{"MiB/s nuse/kernel =", "t_typical nuse/kernel =", "MsgRate   nuse/kernel =", "command round trip / cache-line round trip"} {
		if !strings.Contains(s, want) {
			t.Errorf("the demo printed no %q", want)
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "nuse-demo") {
		t.Errorf("demo.sh left its namespace behind:\n%s", ns)
	}
}
