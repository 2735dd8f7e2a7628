package stack

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/nuse-project/nuse/stack/netdev"
)

// Env is what the daemon gives an engine it starts: the engine's own
// settings and what the daemon knows about addressing and devices. Engines
// take what they need and ignore the rest.
type Env struct {
	// Settings are this engine's key=value settings, as the command line
	// gave them (`nuse daemon --set ENGINE.KEY=VALUE`). Start has checked
	// every key against the Registration's Settings.
	Settings map[string]string
	// StackAddrs are the addresses a packet engine should own on the
	// netdev (empty: the engine's defaults); Gateways its default routes.
	StackAddrs []netip.Prefix
	Gateways   []netip.Addr
	// Loopback asks a packet engine to also own 127.0.0.1/8 and ::1.
	Loopback bool
	// Netdev opens the daemon's packet device (TAP, kmod, uc...), for an
	// engine that puts packets on a wire. nil device and nil error mean
	// "no device" (stack-internal only). Only one engine of a daemon may
	// take it; nil Netdev means none is offered.
	Netdev func() (*netdev.Device, error)
	// Logf reports what the engine did (never nil after Start).
	Logf func(format string, args ...any)
}

// Setting documents one key an engine understands.
type Setting struct {
	Key     string // e.g. "sack"
	Default string // what it is when unset, as text
	Help    string // one line
}

// Registration is what an engine package registers in its init.
type Registration struct {
	// Name is how --engine, rules and `nuse stats` name the engine.
	Name string
	// Summary is one line: what the engine is and what it is for.
	Summary string
	// Settings are the keys New accepts in Env.Settings.
	Settings []Setting
	// New starts an engine.
	New func(env Env) (Engine, error)
}

var (
	regMu sync.Mutex
	regs  = map[string]Registration{}
)

// Register makes an engine available to Start. It panics on a duplicate or
// empty name, or a nil New: those are programming errors.
func Register(r Registration) {
	regMu.Lock()
	defer regMu.Unlock()
	if r.Name == "" || r.New == nil {
		panic("stack: engine registration without a name or New")
	}
	if _, dup := regs[r.Name]; dup {
		panic("stack: engine registered twice: " + r.Name)
	}
	regs[r.Name] = r
}

// Names lists the registered engines, sorted.
func Names() []string {
	regMu.Lock()
	defer regMu.Unlock()
	var ns []string
	for n := range regs {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Registered lists the registrations, sorted by name.
func Registered() []Registration {
	var out []Registration
	for _, n := range Names() {
		r, _ := Lookup(n)
		out = append(out, r)
	}
	return out
}

// Lookup finds a registration. An unknown name is an error that lists the
// engines there are.
func Lookup(name string) (Registration, error) {
	regMu.Lock()
	r, ok := regs[name]
	regMu.Unlock()
	if !ok {
		known := strings.Join(Names(), ", ")
		if known == "" {
			known = "none"
		}
		return Registration{}, fmt.Errorf("unknown engine %q (built in: %s; `nuse engines` tells what each is for)", name, known)
	}
	return r, nil
}

// Start looks name up, checks env.Settings against the engine's keys and
// starts it.
func Start(name string, env Env) (Engine, error) {
	r, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	for k := range env.Settings {
		if !r.hasKey(k) {
			var keys []string
			for _, s := range r.Settings {
				keys = append(keys, s.Key)
			}
			known := strings.Join(keys, ", ")
			if known == "" {
				known = "it has none"
			}
			return nil, fmt.Errorf("engine %s: unknown setting %q (known: %s)", name, k, known)
		}
	}
	if env.Logf == nil {
		env.Logf = func(string, ...any) {}
	}
	e, err := r.New(env)
	if err != nil {
		return nil, fmt.Errorf("starting engine %s: %w", name, err)
	}
	return e, nil
}

func (r Registration) hasKey(k string) bool {
	for _, s := range r.Settings {
		if s.Key == k {
			return true
		}
	}
	return false
}
