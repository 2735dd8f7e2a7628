package e2e

import (
	"regexp"
	"strings"
	"testing"
)

// TestDemo runs scripts/demo.sh (make demo, the README's main job) with a
// small file and one transfer per path: every transfer must arrive intact
// (sha256), each table must print its NUSE/kernel ratio, and the demo's
// namespace must be gone afterwards. No figure is judged.
func TestDemo(t *testing.T) {
	s := runScript(t, []string{"python3", "curl"}, []string{"DEMO_SIZE_MB=4", "DEMO_REPS=1"}, "nuse-demo", "scripts/demo.sh")
	if n := regexp.MustCompile(`(?m)^ (kernel|nuse|mixed): .* ok$`).FindAllString(s, -1); len(n) != 4 || strings.Contains(s, "CORRUPT") {
		t.Errorf("want four intact transfers (kernel, nuse, two mixed), got %d", len(n))
	}
	for _, want := range []string{"MiB/s nuse/kernel =", "t_typical nuse/kernel =", "MsgRate   nuse/kernel =", "command round trip / cache-line round trip"} {
		if !strings.Contains(s, want) {
			t.Errorf("the demo printed no %q", want)
		}
	}
}
