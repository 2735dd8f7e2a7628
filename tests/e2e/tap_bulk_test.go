package e2e

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A NUSE server sending bulk to a kernel client through the TAP (a clean
// virtual link) retransmits next to nothing. A clock that stood still
// through a worker's pass once made gVisor's RTT samples near zero and its
// tail loss probes fire within microseconds: half of each transfer went
// twice.
func TestTAPBulkNoSpuriousRetransmits(t *testing.T) {
	requireRoot(t)
	curl := requireTool(t, "curl")
	ns := newNetns(t)
	ns.startDaemon()
	www := filepath.Join(ns.dir, "www")
	os.Mkdir(www, 0o755)
	blob := make([]byte, 32<<20)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(www, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	ns.startHTTP(subnetRules, "10.77.0.2", 8090, www)
	for i := 0; i < 3; i++ {
		out, err := ns.run(time.Minute, curl, "-s", "-o", "/dev/null", "-w", "%{size_download}", "http://10.77.0.2:8090/blob")
		if err != nil || strings.TrimSpace(out) != "33554432" {
			t.Fatalf("kernel curl from the NUSE server: %v, %q bytes", err, out)
		}
	}
	var segs, retrans uint64
	for _, s := range sessionsOf(ns.stats(), "python3") {
		for _, so := range s.Sockets {
			if so.Local == "10.77.0.2:8090" && so.State != "listen" {
				segs += so.SegsOut
				retrans += so.Retransmits
			}
		}
	}
	t.Logf("the server's connections: %d segments out, %d retransmitted", segs, retrans)
	if segs == 0 {
		t.Fatal("no server connection in the stats")
	}
	if retrans*20 > segs {
		t.Fatalf("%d of %d segments retransmitted on a virtual link (more than 5%%)", retrans, segs)
	}
}
