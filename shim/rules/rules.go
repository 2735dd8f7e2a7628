// Package rules wraps the shim's C rules parser (shim/rules.c), so that the
// CLI (`nuse rules`) and the fuzz test use the very code libnuse.so runs.
//
// Grammar (rules separated by ';' or newlines, '#' comments, first match
// wins, no match: kernel):
//
//	[nuse|kernel] tcp|tcp4|tcp6 [listen|connect] TARGET [prog NAME] [engine ENGINE]
//	TARGET = * | ADDR[/LEN] | *:PORTS | ADDR[/LEN]:PORTS | [V6ADDR][/LEN][:PORTS]
//	PORTS  = N | N-M
//	ENGINE = 1 to 15 of [a-z0-9_-]; none: the daemon's default engine
package rules

/*
#include <stdlib.h>
#include "../rules.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"unsafe"
)

// Set is a parsed rule list.
type Set struct {
	c *C.struct_nuse_rules // C memory: the struct is large and holds no Go pointers
}

// Parse parses rules text. An empty text gives an empty Set (all kernel).
func Parse(text string) (*Set, error) {
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	rs := (*C.struct_nuse_rules)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_nuse_rules{}))))
	if rs == nil {
		return nil, errors.New("rules: out of memory")
	}
	var errbuf [256]C.char
	if C.nuse_rules_parse(ctext, rs, &errbuf[0], C.size_t(len(errbuf))) != 0 {
		C.free(unsafe.Pointer(rs))
		return nil, errors.New(C.GoString(&errbuf[0]))
	}
	s := &Set{c: rs}
	runtime.SetFinalizer(s, func(s *Set) { C.free(unsafe.Pointer(s.c)) })
	return s, nil
}

// Len is the number of rules.
func (s *Set) Len() int { return int(s.c.n) }

// Decide says whether a socket that listens on (dir "listen") or connects to
// (dir "connect") addr, in program prog, goes to NUSE. ruleIndex is the
// 1-based rule that decided, 0 for the default (kernel), -1 for the built-in
// rule that keeps TCP port 53 in the kernel; ruleText describes it.
func (s *Set) Decide(dir string, addr netip.AddrPort, prog string) (nuse bool, ruleIndex int, ruleText string) {
	var d C.int
	switch dir {
	case "listen":
		d = C.NUSE_DIR_LISTEN
	case "connect":
		d = C.NUSE_DIR_CONNECT
	default:
		return false, 0, "unknown direction " + dir
	}
	a16 := addr.Addr().As16() // IPv4 becomes ::ffff:a.b.c.d, as in the shim
	cprog := C.CString(prog)
	defer C.free(unsafe.Pointer(cprog))
	var idx C.int
	r := C.nuse_rules_decide(s.c, d, (*C.uint8_t)(unsafe.Pointer(&a16[0])), C.uint16_t(addr.Port()), cprog, &idx)
	runtime.KeepAlive(s)
	return r == 1, int(idx), C.GoString(C.nuse_rules_why(s.c, idx))
}

// Engine is the engine that rule ruleIndex (as Decide returns it) names: ""
// for the daemon's default, and for decisions no rule made.
func (s *Set) Engine(ruleIndex int) string {
	e := C.GoString(C.nuse_rules_engine(s.c, C.int(ruleIndex)))
	runtime.KeepAlive(s)
	return e
}

// String lists the rules, one per line, numbered as in the shim's messages.
func (s *Set) String() string {
	var b strings.Builder
	for i := 0; i < int(s.c.n); i++ {
		r := &s.c.r[i]
		action := "nuse, daemon's default engine"
		if r.nuse == 0 {
			action = "kernel"
		} else if e := C.GoString(&r.engine[0]); e != "" {
			action = "nuse, engine " + e
		}
		fmt.Fprintf(&b, "%d: %s (%s)\n", i+1, C.GoString(&r.text[0]), action)
	}
	runtime.KeepAlive(s)
	return b.String()
}
