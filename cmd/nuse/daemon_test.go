package main

import (
	"path/filepath"
	"testing"
)

// Bad durations are refused before the daemon starts (a negative
// --shim-spin would reach the programs as a spin of centuries).
func TestDaemonRefusesNegativeDurations(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nused.sock")
	for _, f := range []string{"--spin", "--spin-max", "--shim-spin", "--uc-spin", "--linger"} {
		if rc := runDaemon([]string{"--sock", sock, "--netdev", "none", f, "-1ms"}); rc != 2 {
			t.Errorf("nuse daemon %s -1ms: exit %d, want 2", f, rc)
		}
	}
}
