package rules

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ text, err string }{
		{"tcp 10.0.0.0/8; tcp 10.0.0.0/33", "rule 2: bad prefix length 33 in '10.0.0.0/33'"},
		{"udp 10.0.0.1", "rule 1: udp is not supported yet"},
		{"nuse udp *:53", "rule 1: udp is not supported yet"},
		{"tcp", "rule 1: missing target"},
		{"sctp 1.2.3.4", "rule 1: unknown protocol 'sctp'"},
		{"tcp 1.2.3", "rule 1: bad address '1.2.3'"},
		{"tcp *:99999", "rule 1: bad port '99999'"},
		{"tcp *:90-80", "rule 1: bad port range '90-80'"},
		{"tcp [fd77::]/129", "rule 1: bad prefix length 129"},
		{"tcp [fd77::", "rule 1: missing ']'"},
		{"tcp4 [::1]", "rule 1: tcp4 with IPv6 address"},
		{"tcp6 10.0.0.1", "rule 1: tcp6 with IPv4 address"},
		{"tcp * prog", "rule 1: 'prog' needs a program name"},
		{"tcp * extra", "rule 1: unexpected 'extra'"},
		{"# c\n\n tcp *:80 ; bogus", "rule 2: unknown protocol 'bogus'"},
		{"tcp *:8x", "rule 1: bad port '8x'"},
		{"tcp 10.0.0.0/", "rule 1: bad prefix length"},
		{"tcp x:80", "rule 1: bad address 'x'"},
		{"tcp * engine", "rule 1: 'engine' needs an engine name"},
		{"tcp * engine Kernel", "rule 1: bad engine name 'Kernel' (use a-z, 0-9, '_' and '-')"},
		{"tcp * engine a.b", "rule 1: bad engine name 'a.b'"},
		{"tcp * engine sixteen-chars-xx", "rule 1: engine name 'sixteen-chars-xx...' longer than 15 characters"},
		{"tcp * engine kernel engine gvisor", "rule 1: 'engine' given twice"},
		{"tcp * prog a prog b", "rule 1: 'prog' given twice"},
		{"kernel tcp * engine gvisor", "rule 1: a kernel rule takes no engine"},
		{"tcp *; tcp * engine gvisor extra", "rule 2: unexpected 'extra'"},
		{"tcp * engine kernel prog", "rule 1: 'prog' needs a program name"},
	} {
		_, err := Parse(c.text)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Parse(%q) = %v, want error containing %q", c.text, err, c.err)
		}
	}
}

func TestDecide(t *testing.T) {
	s, err := Parse(`
# a comment; still a comment
kernel tcp 10.77.0.9          # exception first
tcp 10.77.0.0/16
tcp listen *:8080; tcp connect 127.0.0.1:6379
tcp [fd77::]/64:80-90 prog curl
tcp6 connect [::1]:7000
tcp4 connect *:9000-9001
`)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 7 {
		t.Fatalf("Len = %d, want 7\n%s", s.Len(), s)
	}
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		dir, addr, prog string
		nuse            bool
		idx             int
	}{
		{"connect", "10.77.0.9:80", "x", false, 1},
		{"connect", "10.77.0.2:80", "x", true, 2},
		{"listen", "10.77.1.1:22", "x", true, 2},
		{"connect", "[::ffff:10.77.0.2]:80", "x", true, 2}, // v4-mapped counts as IPv4
		{"connect", "10.78.0.2:80", "x", false, 0},
		{"connect", "10.77.0.2:53", "x", false, -1}, // DNS stays in the kernel
		{"listen", "0.0.0.0:8080", "x", true, 3},
		{"listen", "[::]:8080", "x", true, 3},
		{"connect", "1.2.3.4:8080", "x", false, 0},
		{"connect", "127.0.0.1:6379", "x", true, 4},
		{"listen", "127.0.0.1:6379", "x", false, 0},
		{"connect", "[fd77::5]:85", "curl", true, 5},
		{"connect", "[fd77::5]:85", "wget", false, 0},
		{"connect", "[fd77::5]:91", "curl", false, 0},
		{"connect", "[fd77:0:0:1::5]:85", "curl", false, 0},
		{"connect", "[::1]:7000", "x", true, 6},
		{"connect", "127.0.0.1:9001", "x", true, 7},
		{"connect", "[::ffff:127.0.0.1]:9000", "x", true, 7},
		{"connect", "[::1]:9000", "x", false, 0},
	} {
		nuse, idx, why := s.Decide(c.dir, ap(c.addr), c.prog)
		if nuse != c.nuse || idx != c.idx {
			t.Errorf("Decide(%s %s %s) = %v, %d (%s); want %v, %d", c.dir, c.addr, c.prog, nuse, idx, why, c.nuse, c.idx)
		}
	}
	if _, _, why := s.Decide("connect", ap("10.77.0.2:80"), "x"); why != "tcp 10.77.0.0/16" {
		t.Errorf("rule text %q", why)
	}
	if !strings.Contains(s.String(), "1: kernel tcp 10.77.0.9 (kernel)") {
		t.Errorf("String:\n%s", s)
	}
}

// Issue 12: a rule may name the engine its sockets use.
func TestEngine(t *testing.T) {
	s, err := Parse(`tcp 127.0.0.0/8 engine kernel; tcp 10.77.0.0/16 engine gvisor
tcp connect 192.168.5.0/24:6000-6100 engine kernel
tcp listen *:8080 engine shm prog redis-server
tcp connect *:9000 prog curl engine my_eng-2
kernel tcp 10.0.0.1
tcp 10.0.0.0/8
nuse tcp6 connect [fd77::]/64:80-90 prog curl engine abcdefghijklmno`)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		dir, addr, prog string
		nuse            bool
		idx             int
		engine          string
	}{
		{"connect", "127.0.0.1:80", "x", true, 1, "kernel"},
		{"listen", "127.0.0.2:80", "x", true, 1, "kernel"},
		{"connect", "10.77.0.2:80", "x", true, 2, "gvisor"},
		{"connect", "192.168.5.9:6050", "x", true, 3, "kernel"},
		{"connect", "192.168.5.9:6101", "x", false, 0, ""},
		{"listen", "0.0.0.0:8080", "redis-server", true, 4, "shm"},
		{"listen", "0.0.0.0:8080", "nginx", true, 1, "kernel"}, // the wildcard goes where loopback does (rule 1)
		{"connect", "1.2.3.4:9000", "curl", true, 5, "my_eng-2"},
		{"connect", "10.0.0.1:9001", "x", false, 6, ""},
		{"connect", "10.0.0.2:9001", "x", true, 7, ""}, // no engine: the daemon's default
		{"connect", "127.0.0.1:53", "x", false, -1, ""},
		{"connect", "[fd77::1]:85", "curl", true, 8, "abcdefghijklmno"},
	} {
		nuse, idx, why := s.Decide(c.dir, ap(c.addr), c.prog)
		if nuse != c.nuse || idx != c.idx || s.Engine(idx) != c.engine {
			t.Errorf("Decide(%s %s %s) = %v, %d (%s), engine %q; want %v, %d, %q", c.dir, c.addr, c.prog, nuse, idx, why,
				s.Engine(idx), c.nuse, c.idx, c.engine)
		}
	}
	if _, _, why := s.Decide("connect", ap("10.77.0.2:80"), "x"); why != "tcp 10.77.0.0/16 engine gvisor" {
		t.Errorf("rule text %q", why)
	}
	for _, want := range []string{
		"1: tcp 127.0.0.0/8 engine kernel (nuse, engine kernel)\n",
		"5: tcp connect *:9000 prog curl engine my_eng-2 (nuse, engine my_eng-2)\n",
		"6: kernel tcp 10.0.0.1 (kernel)\n",
		"7: tcp 10.0.0.0/8 (nuse, daemon's default engine)\n",
	} {
		if !strings.Contains(s.String(), want) {
			t.Errorf("String lacks %q:\n%s", want, s)
		}
	}
	if s.Engine(0) != "" || s.Engine(-1) != "" || s.Engine(99) != "" {
		t.Error("Engine of a decision no rule made is not empty")
	}
}

func TestTargets(t *testing.T) {
	for _, text := range []string{
		"tcp *", "tcp *:80", "tcp 1.2.3.4", "tcp 1.2.3.0/24:1-2", "tcp [::1]", "tcp [::1]:80",
		"tcp [fd77::]/64", "tcp [fd77::]/64:80-90", "tcp [fd77::/64]:80", "tcp fd77::/64",
		"tcp [::ffff:10.0.0.0]/104", "nuse tcp listen *:0-65535", "kernel tcp6 connect [::]/0",
	} {
		if _, err := Parse(text); err != nil {
			t.Errorf("Parse(%q): %v", text, err)
		}
	}
	s, _ := Parse("tcp [::ffff:10.0.0.0]/104")
	if nuse, _, _ := s.Decide("connect", netip.MustParseAddrPort("10.1.2.3:1"), ""); !nuse {
		t.Error("v4-mapped rule does not match IPv4")
	}
	s, _ = Parse("tcp [::]/0")
	if nuse, _, _ := s.Decide("connect", netip.MustParseAddrPort("10.1.2.3:1"), ""); nuse {
		t.Error("IPv6 rule matches an IPv4 address")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"tcp 10.77.0.0/16; tcp listen *:8080", "kernel tcp 10.77.0.9", "tcp [fd77::]/64:80-90 prog curl",
		"tcp [fd77::/64]:80", "udp *", "# x\ntcp *", "tcp4 connect 127.0.0.1:6379",
		"tcp 127.0.0.0/8 engine kernel; tcp 10.77.0.0/16 engine gvisor", "tcp connect 192.168.5.0/24:6000-6100 engine kernel",
		"tcp * prog curl engine shm", "tcp * engine x_y-z prog p", "kernel tcp * engine gvisor", "tcp * engine ABC",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(text)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		_ = s.String()
		for _, a := range []string{"10.77.0.2:80", "[::1]:8080", "[fd77::1]:85", "0.0.0.0:0"} {
			s.Decide("connect", netip.MustParseAddrPort(a), "curl")
			s.Decide("listen", netip.MustParseAddrPort(a), "curl")
		}
		// Printing the rules and parsing them again gives the same rules.
		var b strings.Builder
		for i := 0; i < s.Len(); i++ {
			b.WriteString(textOf(s, i))
			b.WriteString("\n")
		}
		s2, err := Parse(b.String())
		if err != nil || s2.Len() != s.Len() {
			t.Fatalf("reparse of %q: %v", b.String(), err)
		}
		for i := 0; i <= s.Len(); i++ {
			e := s.Engine(i)
			if e != s2.Engine(i) || len(e) > 15 || strings.Trim(e, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
				t.Fatalf("rule %d engine %q, after reparse %q", i, e, s2.Engine(i))
			}
		}
	})
}

// A wildcard listen no rule names is decided as a loopback listen on its
// port (issue 11, case 6): with loopback claimed, local NUSE clients of a
// server on 0.0.0.0 or [::] reach it.
func TestWildcardListenFollowsLoopback(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		rules, addr string
		nuse        bool
		idx         int
	}{
		{"tcp 127.0.0.0/8", "0.0.0.0:80", true, 1},
		{"tcp 127.0.0.0/8", "[::]:80", true, 1}, // dual-stack: IPv4 loopback counts
		{"tcp [::1]", "[::]:80", true, 1},
		{"tcp [::1]", "0.0.0.0:80", false, 0},
		{"tcp 127.0.0.1:8000-8100", "0.0.0.0:8080", true, 1},
		{"tcp 127.0.0.1:8000-8100", "0.0.0.0:9090", false, 0},
		{"tcp 10.0.0.0/8", "0.0.0.0:80", false, 0},
		{"kernel tcp listen *:80; tcp 127.0.0.0/8", "0.0.0.0:80", false, 1}, // a rule for the wildcard wins
		{"tcp connect 127.0.0.0/8", "0.0.0.0:80", false, 0},                 // loopback claimed for connects only
		{"tcp 127.0.0.0/8", "127.0.0.5:80", true, 1},
	} {
		s, err := Parse(c.rules)
		if err != nil {
			t.Fatal(err)
		}
		nuse, idx, why := s.Decide("listen", ap(c.addr), "srv")
		if nuse != c.nuse || idx != c.idx {
			t.Errorf("%q: listen %s = %v, %d (%s); want %v, %d", c.rules, c.addr, nuse, idx, why, c.nuse, c.idx)
		}
	}
}
