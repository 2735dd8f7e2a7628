package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runScript runs one of the repository's scripts (as root, with env added
// to the test's environment) the way its e2e test does for all of them:
// the tools it needs installed (else a loud skip), bounded by 300 s, its
// output logged and returned; and once it has ended, no network namespace
// whose name starts with ns may be left.
func runScript(t *testing.T, tools []string, env []string, ns, script string, args ...string) string {
	t.Helper()
	requireRoot(t)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED LOUDLY: %s not installed (.ci/apt/base.list installs it)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(repo, script)}, args...)...)
	c.Env = append(os.Environ(), env...)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	t.Logf("%s:\n%s", script, out)
	if l, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(l), ns) {
		t.Errorf("%s left its namespace behind:\n%s", script, l)
	}
	return string(out)
}
