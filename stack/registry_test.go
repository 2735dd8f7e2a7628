package stack

import (
	"errors"
	"strings"
	"testing"
)

type nullEngine struct{ name string }

func (n nullEngine) Name() string               { return n.name }
func (n nullEngine) Socket(int) (Socket, error) { return nil, ErrWouldBlock }
func (n nullEngine) Close() error               { return nil }

func TestRegistry(t *testing.T) {
	var got Env
	Register(Registration{Name: "test-null", Summary: "does nothing", Settings: []Setting{{Key: "k", Default: "1", Help: "a key"}},
		New: func(env Env) (Engine, error) { got = env; return nullEngine{"test-null"}, nil }})
	Register(Registration{Name: "test-broken", Summary: "fails",
		New: func(Env) (Engine, error) { return nil, errors.New("no luck") }})
	defer func() {
		regMu.Lock()
		delete(regs, "test-null")
		delete(regs, "test-broken")
		regMu.Unlock()
	}()
	names := strings.Join(Names(), ",")
	if !strings.Contains(names, "test-broken,test-null") {
		t.Fatalf("Names() = %s", names)
	}
	e, err := Start("test-null", Env{Settings: map[string]string{"k": "2"}})
	if err != nil || e.Name() != "test-null" || got.Settings["k"] != "2" || got.Logf == nil {
		t.Fatalf("Start = %v, %v; env %+v", e, err, got)
	}
	if _, err := Start("test-null", Env{Settings: map[string]string{"x": "2"}}); err == nil || !strings.Contains(err.Error(), `unknown setting "x" (known: k)`) {
		t.Fatalf("unknown setting: %v", err)
	}
	if _, err := Start("test-broken", Env{}); err == nil || !strings.Contains(err.Error(), "starting engine test-broken: no luck") {
		t.Fatalf("failing New: %v", err)
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), `unknown engine "nope" (built in: `) || !strings.Contains(err.Error(), "test-null") {
		t.Fatalf("Lookup(nope) = %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a duplicate registration did not panic")
			}
		}()
		Register(Registration{Name: "test-null", New: func(Env) (Engine, error) { return nil, nil }})
	}()
}
