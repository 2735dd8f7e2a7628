package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Edge-triggered epoll, the way nginx drives its sockets: a missed EPOLLOUT
// or EPOLLIN edge is a stall, which the program reports.
func TestEdgeTriggeredEpoll(t *testing.T) {
	requireRoot(t)
	prog := bin("epoll_et")
	if _, err := os.Stat(prog); err != nil {
		t.Fatalf("%s missing: run 'make build'", prog)
	}
	ns := newNetns(t)
	ns.startDaemon()
	cases := []struct {
		name, rules, addr string
		asan              bool
	}{
		{"kernel-baseline", "", "127.0.0.1", false},
		{"nuse-loopback", "tcp 127.0.0.0/8", "127.0.0.1", false},
		{"nuse-subnet-v6", subnetRules, "fd77::2", false},
		{"nuse-loopback-asan", "tcp 127.0.0.0/8", "127.0.0.1", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns.runProgram(t, c.rules, c.asan, "12 rounds x 6000000 bytes ok", prog, c.addr, fmt.Sprint(17700+i), "12", "6000000")
		})
	}
}

// Unmodified nginx (master and two forked workers, epoll, sendfile on and
// off) under nuse run serves a 20 MB file to kernel and NUSE curls, over
// IPv4 and IPv6, and many keep-alive requests in a row.
func TestNginx(t *testing.T) {
	requireRoot(t)
	nginx := requireTool(t, "nginx")
	requireTool(t, "curl")
	ns := newNetns(t)
	ns.startDaemon()
	const size = 20 << 20
	_, want := ns.startNginx(t, nginx, subnetRules, "10.77.0.2", "fd77::2", size, "")
	fetch := func(t *testing.T, viaNUSE bool, url string) {
		dst := filepath.Join(ns.dir, "got.bin")
		os.Remove(dst)
		argv := []string{"curl", "-sS", "--fail", "--max-time", "120", "-o", dst, url}
		if viaNUSE {
			argv = ns.nuseRun(subnetRules, argv...)
		}
		out, err := ns.run(3*time.Minute, argv...)
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", url, err, out)
		}
		if fileSum(t, dst) != want {
			t.Fatalf("sha256 of %s differs", url)
		}
	}
	for _, c := range []struct {
		name string
		nuse bool
		url  string
	}{
		{"kernel-curl-writev", false, "http://10.77.0.2:8080/big.bin"},
		{"kernel-curl-sendfile", false, "http://10.77.0.2:8081/big.bin"},
		{"nuse-curl-writev", true, "http://10.77.0.2:8080/big.bin"},
		{"nuse-curl-sendfile", true, "http://10.77.0.2:8081/big.bin"},
		{"nuse-curl-v6", true, "http://[fd77::2]:8080/big.bin"},
	} {
		t.Run(c.name, func(t *testing.T) { fetch(t, c.nuse, c.url) })
	}
	t.Run("keepalive-200-requests", func(t *testing.T) {
		argv := []string{"curl", "-sS", "--fail", "--max-time", "60", "-w", "%{http_code} %{num_connects}\n", "-o", "/dev/null"}
		for i := 0; i < 200; i++ {
			argv = append(argv, "-o", "/dev/null", "http://10.77.0.2:8080/small.txt")
		}
		out, err := ns.run(2*time.Minute, ns.nuseRun(subnetRules, argv...)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if n := len(regexp.MustCompile(`(?m)^200 `).FindAllString(out, -1)); n != 200 {
			t.Fatalf("%d of 200 requests answered 200:\n%s", n, out)
		}
	})
	var sent uint64
	for _, s := range sessionsOf(ns.stats(), "nginx") {
		sent += s.TxBytes
	}
	if sent < 5*size {
		t.Fatalf("nginx's sessions sent %d bytes through NUSE, want >= %d", sent, 5*size)
	}
}

// Unmodified redis-server under NUSE, hammered by redis-benchmark (many
// concurrent connections on one epoll loop) from the kernel and from NUSE,
// and a 1 MB value stored and read back through redis-cli.
func TestRedis(t *testing.T) {
	requireRoot(t)
	redis := requireTool(t, "redis-server")
	requireTool(t, "redis-benchmark")
	requireTool(t, "redis-cli")
	ns := newNetns(t)
	ns.startDaemon()
	srv := ns.start(ns.nuseRun(subnetRules, redis, "--bind", "10.77.0.2", "--port", "6379", "--save", "",
		"--appendonly", "no", "--protected-mode", "no", "--dir", ns.dir)...)
	ns.waitFor("redis-server", 20*time.Second, func() bool {
		select {
		case <-srv.done:
			t.Fatalf("redis-server exited: %v\n%s", srv.err, srv.output())
		default:
		}
		out, _ := ns.run(5*time.Second, "redis-cli", "-h", "10.77.0.2", "ping")
		return strings.Contains(out, "PONG")
	})
	for _, c := range []struct {
		name string
		nuse bool
	}{{"kernel-benchmark", false}, {"nuse-benchmark", true}} {
		t.Run(c.name, func(t *testing.T) {
			argv := []string{"redis-benchmark", "-h", "10.77.0.2", "-n", "20000", "-c", "20", "-t", "set,get,lpush,lpop", "-q"}
			if c.nuse {
				argv = ns.nuseRun(subnetRules, argv...)
			}
			out, err := ns.run(3*time.Minute, argv...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			// One "NAME: N requests per second" summary per test.
			re := regexp.MustCompile(`(?m)(SET|GET|LPUSH|LPOP): [0-9.]+ requests per second`)
			got := re.FindAllString(out, -1)
			if len(got) != 4 {
				t.Fatalf("want 4 summaries, got %d:\n%s", len(got), out)
			}
			t.Logf("%s", strings.Join(got, "; "))
		})
	}
	t.Run("big-value", func(t *testing.T) {
		val := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
		f := filepath.Join(ns.dir, "val")
		os.WriteFile(f, []byte(val), 0o644)
		setCmd := fmt.Sprintf("redis-cli -h 10.77.0.2 -x set big < %s", f)
		if out, err := ns.run(time.Minute, ns.nuseRun(subnetRules, "bash", "-c", setCmd)...); err != nil || !strings.Contains(out, "OK") {
			t.Fatalf("set: %v\n%s", err, out)
		}
		got := filepath.Join(ns.dir, "got")
		getCmd := fmt.Sprintf("redis-cli -h 10.77.0.2 --raw get big > %s", got)
		if out, err := ns.run(time.Minute, ns.nuseRun(subnetRules, "bash", "-c", getCmd)...); err != nil {
			t.Fatalf("get: %v\n%s", err, out)
		}
		if b, _ := os.ReadFile(got); strings.TrimRight(string(b), "\n") != val {
			t.Fatalf("the value read back differs (%d bytes, want %d)", len(b), len(val))
		}
		out, err := ns.run(time.Minute, ns.nuseRun(subnetRules, "redis-cli", "-h", "10.77.0.2", "--no-raw", "strlen", "big")...)
		if err != nil || !strings.Contains(out, fmt.Sprint(len(val))) {
			t.Fatalf("strlen: %v\n%s", err, out)
		}
	})
	var rx uint64
	for _, s := range sessionsOf(ns.stats(), "redis-server") {
		rx += s.RxBytes
	}
	if rx < 1<<20 {
		t.Fatalf("redis-server received %d bytes through NUSE, want > 1 MiB", rx)
	}
}

// startNginx serves a random file of size bytes (big.bin, its sha256
// returned) and small.txt with nginx, 2 worker processes, under nuse run
// with rules, on host4:8080, [host6]:8080 (sendfile off) and host4:8081
// (sendfile on), and waits until curl (under probeRules when set) fetches
// small.txt.
func (ns *netns) startNginx(t *testing.T, nginx, rules, host4, host6 string, size int, probeRules string) (*proc, [32]byte) {
	t.Helper()
	www := filepath.Join(ns.dir, "www")
	os.Mkdir(www, 0o755)
	want := writeRandomFile(t, filepath.Join(www, "big.bin"), size)
	os.WriteFile(filepath.Join(www, "small.txt"), []byte("hello from nginx\n"), 0o644)
	conf := filepath.Join(ns.dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
user root;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[1]s/tmp;
	proxy_temp_path %[1]s/tmp;
	fastcgi_temp_path %[1]s/tmp;
	uwsgi_temp_path %[1]s/tmp;
	scgi_temp_path %[1]s/tmp;
	server { listen %[3]s:8080; listen [%[4]s]:8080; root %[2]s; sendfile off; }
	server { listen %[3]s:8081; root %[2]s; sendfile on; }
}
`, ns.dir, www, host4, host6)), 0o644)
	os.Mkdir(filepath.Join(ns.dir, "tmp"), 0o755)
	srv := ns.start(ns.nuseRun(rules, nginx, "-c", conf)...)
	probe := []string{"curl", "-sf", "-o", "/dev/null", "--max-time", "2", "http://" + host4 + ":8080/small.txt"}
	if probeRules != "" {
		probe = ns.nuseRun(probeRules, probe...)
	}
	ns.waitFor("nginx", 20*time.Second, func() bool {
		select {
		case <-srv.done:
			b, _ := os.ReadFile(filepath.Join(ns.dir, "error.log"))
			t.Fatalf("nginx exited: %v\n%s\n%s", srv.err, srv.output(), b)
		default:
		}
		_, err := ns.run(5*time.Second, probe...)
		return err == nil
	})
	return srv, want
}
