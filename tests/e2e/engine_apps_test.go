package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/usock"
)

// appEngines are the engines the real programs run under, a subtest each
// in its own namespace with its own daemon. A new engine is one more row.
var appEngines = []string{"gvisor", "kernel", "shm"}

// startEngineDaemon runs a daemon whose default engine is engine, also
// running the other engines of appEngines (they must stay idle: the stats
// then show which engine carried the traffic), and waits for its ready
// line.
func (ns *netns) startEngineDaemon(engine string, extra ...string) *proc {
	ns.t.Helper()
	args := append([]string{"--engine", engine, "--netdev", "none"}, extra...)
	var others []string
	for _, e := range appEngines {
		if e != engine {
			others = append(others, e)
		}
	}
	ready := "engine " + engine
	if len(others) > 0 {
		args = append(args, "--engines", strings.Join(others, ","))
		ready += " (also running " + strings.Join(others, ", ") + ")"
	}
	d := ns.startDaemon(args...)
	ns.waitFor("the daemon's ready line naming its engines", 10*time.Second, func() bool {
		return strings.Contains(d.output(), ready)
	})
	return d
}

// statsJSON is `nuse stats --json` against the test's daemon.
func (ns *netns) statsJSON() *usock.Stats {
	ns.t.Helper()
	out := ns.mustRun(bin("nuse"), "stats", "--json", "--sock", ns.sock())
	var st usock.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		ns.t.Fatalf("nuse stats --json: %v\n%s", err, out)
	}
	return &st
}

// checkCarriedBy checks that stats show engine as the default, that it
// sent and received at least minBytes in total while every other engine
// carried nothing, and that every socket of the programs named in comms is
// on engine (and each of them had at least one).
func checkCarriedBy(t *testing.T, st *usock.Stats, engine string, minBytes uint64, comms ...string) {
	t.Helper()
	if st.Engine != engine {
		t.Errorf("stats: default engine %q, want %q", st.Engine, engine)
	}
	seen := false
	for _, e := range st.Engines {
		switch {
		case e.Name == engine:
			seen = true
			if e.TxBytes < minBytes || e.RxBytes < minBytes {
				t.Errorf("stats: engine %s carried tx %d, rx %d bytes, want >= %d each", e.Name, e.TxBytes, e.RxBytes, minBytes)
			}
		case e.TxBytes != 0 || e.RxBytes != 0 || e.Sockets != 0:
			t.Errorf("stats: engine %s, not the one in use, has %d sockets, tx %d, rx %d bytes", e.Name, e.Sockets, e.TxBytes, e.RxBytes)
		}
	}
	if !seen {
		t.Errorf("stats: no engine %q in %+v", engine, st.Engines)
	}
	for _, comm := range comms {
		n, wrong, first := 0, 0, ""
		for _, s := range sessionsOf(st, comm) {
			for _, so := range s.Sockets {
				n++
				if so.Engine != engine {
					if wrong++; wrong == 1 {
						first = fmt.Sprintf("pid %d socket %d (%s → %s) on %q", s.Pid, so.Slot, so.Local, so.Remote, so.Engine)
					}
				}
			}
		}
		switch {
		case n == 0:
			t.Errorf("stats show no NUSE socket of %s", comm)
		case wrong > 0:
			t.Errorf("%s: %d of %d sockets not on engine %q, e.g. %s", comm, wrong, n, engine, first)
		}
	}
	t.Logf("nuse stats --json engines: %+v", st.Engines)
}

// Issue 12: unmodified redis-server and redis-benchmark, both under NUSE
// over loopback, on each engine: a few thousand requests, then keys set
// through NUSE with redis-cli (over ::1) read back (over 127.0.0.1) and
// compared, with the length of the benchmark's own key. nuse stats --json shows every
// socket of the three programs on the engine, which carried the bytes.
func TestRedisPerEngine(t *testing.T) {
	requireRoot(t)
	redis := requireTool(t, "redis-server")
	requireTool(t, "redis-benchmark")
	requireTool(t, "redis-cli")
	// Each engine with the daemon's defaults, and gvisor with the daemon's
	// Go code on one thread (--procs 1: gVisor's TCP processors then run
	// only between the worker's passes).
	type variant struct {
		name, engine string
		extra        []string
	}
	var variants []variant
	for _, e := range appEngines {
		variants = append(variants, variant{e, e, nil})
	}
	variants = append(variants, variant{"gvisor-procs1", "gvisor", []string{"--procs", "1"}})
	for _, v := range variants {
		engine := v.engine
		t.Run(v.name, func(t *testing.T) {
			ns := newNetns(t)
			ns.startEngineDaemon(engine, v.extra...)
			srv := ns.start(ns.nuseRun(loopRules, redis, "--bind", "127.0.0.1", "::1", "--port", "6379", "--save", "",
				"--appendonly", "no", "--protected-mode", "no", "--dir", ns.dir)...)
			ns.waitFor("redis-server", 20*time.Second, func() bool {
				select {
				case <-srv.done:
					t.Fatalf("redis-server exited: %v\n%s", srv.err, srv.output())
				default:
				}
				out, _ := ns.run(5*time.Second, ns.nuseRun(loopRules, "redis-cli", "-h", "127.0.0.1", "ping")...)
				return strings.Contains(out, "PONG")
			})

			const reqs, dsize = 4000, 64
			out, err := ns.run(2*time.Minute, ns.nuseRun(loopRules, "redis-benchmark", "-h", "127.0.0.1", "-p", "6379",
				"-n", fmt.Sprint(reqs), "-c", "10", "-d", fmt.Sprint(dsize), "-t", "set,get", "-q")...)
			if err != nil {
				t.Fatalf("redis-benchmark: %v\n%s", err, out)
			}
			sum := regexp.MustCompile(`(?m)(SET|GET): [0-9.]+ requests per second`).FindAllString(out, -1)
			if len(sum) != 2 {
				t.Fatalf("redis-benchmark: want 2 summaries, got %d:\n%s", len(sum), out)
			}
			t.Logf("%s: %s", engine, strings.Join(sum, "; "))

			// Known keys, random values: SET over ::1, MGET over 127.0.0.1.
			const nkeys = 100
			keys, vals := make([]string, nkeys), make([]string, nkeys)
			var cmds strings.Builder
			for i := range keys {
				var b [24]byte
				rand.Read(b[:])
				keys[i], vals[i] = fmt.Sprintf("nuse:%s:%d", v.name, i), hex.EncodeToString(b[:])
				fmt.Fprintf(&cmds, "SET %s %s\n", keys[i], vals[i])
			}
			cmdFile := filepath.Join(ns.dir, "set.txt")
			os.WriteFile(cmdFile, []byte(cmds.String()), 0o644)
			out, err = ns.run(time.Minute, ns.nuseRun(loopRules, "bash", "-c", "redis-cli -h ::1 -p 6379 < "+cmdFile)...)
			if err != nil || strings.Count(out, "OK") != nkeys {
				t.Fatalf("redis-cli SET x %d over ::1: %v\n%s", nkeys, err, out)
			}
			// The benchmark's SETs wrote key:__rand_int__ (no -r), dsize
			// random bytes.
			out, err = ns.run(time.Minute, ns.nuseRun(loopRules, append([]string{"redis-cli", "-h", "127.0.0.1", "-p", "6379", "--raw", "mget", "key:__rand_int__"}, keys...)...)...)
			if err != nil {
				t.Fatalf("redis-cli MGET: %v\n%s", err, out)
			}
			got := strings.Split(strings.TrimRight(out, "\n"), "\n")
			if len(got) != nkeys+1 || len(got[0]) != dsize || !slices.Equal(got[1:], vals) {
				t.Fatalf("MGET read back %d values (the benchmark's of %d bytes, want %d), want %d equal to those set; got:\n%s",
					len(got), len(got[0]), dsize, nkeys+1, out)
			}

			checkCarriedBy(t, ns.statsJSON(), engine, reqs*dsize, "redis-server", "redis-benchmark", "redis-cli")
		})
	}
}

// Issue 12: unmodified nginx (master and two forked workers) and curl, both
// under NUSE over loopback, on each engine: a 24 MiB random file fetched
// over IPv4 (writev and sendfile) and IPv6, sha256 compared. nuse stats
// --json shows every socket of nginx and curl on the engine, which carried
// the bytes.
func TestNginxPerEngine(t *testing.T) {
	requireRoot(t)
	nginx := requireTool(t, "nginx")
	requireTool(t, "curl")
	for _, engine := range appEngines {
		t.Run(engine, func(t *testing.T) {
			ns := newNetns(t)
			ns.startEngineDaemon(engine)
			const size = 24 << 20
			srv, want := ns.startNginx(t, nginx, loopRules, "127.0.0.1", "::1", size, loopRules)
			urls := []string{"http://127.0.0.1:8080/big.bin", "http://127.0.0.1:8081/big.bin", "http://[::1]:8080/big.bin"}
			for _, url := range urls {
				dst := filepath.Join(ns.dir, "got.bin")
				os.Remove(dst)
				out, err := ns.run(2*time.Minute, ns.nuseRun(loopRules, "curl", "-sS", "--fail", "--max-time", "100", "-o", dst, url)...)
				if err != nil {
					t.Fatalf("curl %s: %v\n%s", url, err, out)
				}
				if fileSum(t, dst) != want {
					t.Fatalf("sha256 of %s differs", url)
				}
			}
			st := ns.statsJSON()
			checkCarriedBy(t, st, engine, uint64(len(urls))*size, "nginx", "curl")
			// The master forked its two workers (they share its NUSE
			// session), which served.
			if n := groupCount(srv.cmd.Process.Pid, "nginx"); n != 3 {
				t.Errorf("nginx: %d processes in its group, want the master and 2 workers", n)
			}
		})
	}
}

// groupCount counts the processes of process group pgid called comm.
func groupCount(pgid int, comm string) int {
	n := 0
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		rest := strings.Fields(string(b[end+1:]))
		if string(b[open+1:end]) == comm && len(rest) > 2 && rest[2] == strconv.Itoa(pgid) {
			n++
		}
	}
	return n
}

// Issue 12, shm: under load (nginx's 2 workers, wrk's 32 connections,
// both ends under NUSE) no fd may poll readable with nothing to read:
// wrk counts a read that finds nothing after epoll said readable as an
// error, and a writer that woke a reader who had already taken its bytes
// made one or two such every ten seconds (shim/wake.h; the daemon's own
// byte had the same race): 20 s of load, so that a rate like that shows.
// wrk must report no socket errors and only 2xx answers.
func TestShmNginxWrkNoEmptyReadiness(t *testing.T) {
	requireRoot(t)
	nginx := requireTool(t, "nginx")
	requireTool(t, "curl")
	requireTool(t, "wrk")
	ns := newNetns(t)
	ns.startEngineDaemon("shm")
	ns.startNginx(t, nginx, loopRules, "127.0.0.1", "::1", 4096, loopRules)
	for i := 0; i < 4; i++ {
		out, err := ns.run(time.Minute, ns.nuseRun(loopRules, "wrk", "-t", "2", "-c", "32", "-d", "5s", "http://127.0.0.1:8080/big.bin")...)
		if err != nil || !strings.Contains(out, "requests in") {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		if strings.Contains(out, "Socket errors") || strings.Contains(out, "Non-2xx") {
			t.Errorf("wrk run %d saw errors:\n%s", i+1, out)
		}
	}
}
