package ringtest

import (
	"bytes"
	"math"
	"math/rand"
	"testing"
)

func TestEdges(t *testing.T) {
	r := New(16)
	defer r.Free()
	if r.Used() != 0 || r.FreeSpace() != 16 || !r.Sane() {
		t.Fatalf("empty: used %d free %d", r.Used(), r.FreeSpace())
	}
	buf := make([]byte, 4)
	if n := r.Read(buf, false); n != 0 {
		t.Fatalf("read from empty = %d", n)
	}
	if n := r.Write([]byte("0123456789abcdefXYZ")); n != 16 {
		t.Fatalf("write to empty 16-byte ring = %d", n)
	}
	if r.FreeSpace() != 0 || r.Used() != 16 {
		t.Fatalf("full: used %d free %d", r.Used(), r.FreeSpace())
	}
	if n := r.Write([]byte("x")); n != 0 {
		t.Fatalf("write to full = %d", n)
	}
	if n := r.Read(buf, true); n != 4 || string(buf) != "0123" || r.Used() != 16 {
		t.Fatalf("peek = %d %q", n, buf)
	}
	r.Read(make([]byte, 10), false) // tail at 10
	// head is at offset 0, tail at offset 10: the read below wraps
	if n := r.Write([]byte("ABCDEFGHIJ")); n != 10 {
		t.Fatalf("write after read = %d", n)
	}
	out := make([]byte, 32)
	if n := r.Read(out, false); n != 16 || string(out[:16]) != "abcdefABCDEFGHIJ" {
		t.Fatalf("read = %d %q", n, out[:n])
	}
	if r.Used() != 0 || r.FreeSpace() != 16 {
		t.Fatalf("drained: used %d", r.Used())
	}
}

func TestWrapSplit(t *testing.T) {
	r := New(8)
	defer r.Free()
	r.Head, r.Tail = 6, 6 // two bytes before the end
	if n := r.Write([]byte("abcde")); n != 5 {
		t.Fatal(n)
	}
	raw := r.Raw()
	if string(raw[6:8]) != "ab" || string(raw[0:3]) != "cde" {
		t.Fatalf("bytes landed wrong: %q", raw)
	}
	out := make([]byte, 5)
	if n := r.Read(out, false); n != 5 || string(out) != "abcde" {
		t.Fatalf("read %d %q", n, out)
	}
}

func TestCountersNearOverflow(t *testing.T) {
	r := New(64)
	defer r.Free()
	r.Head, r.Tail = math.MaxUint64-10, math.MaxUint64-10 // free-running counters wrap too
	msg := bytes.Repeat([]byte("z"), 40)
	if n := r.Write(msg); n != 40 || r.Used() != 40 {
		t.Fatalf("write %d used %d", n, r.Used())
	}
	out := make([]byte, 64)
	if n := r.Read(out, false); n != 40 || !bytes.Equal(out[:40], msg) {
		t.Fatalf("read %d", n)
	}
}

func TestInsane(t *testing.T) {
	r := New(16)
	defer r.Free()
	r.Head, r.Tail = 100, 50 // 50 used in a 16-byte ring
	if r.Sane() {
		t.Fatal("50 bytes used in a 16-byte ring counted as sane")
	}
	r.Head, r.Tail = 5, 6 // head behind tail
	if r.Sane() {
		t.Fatal("head behind tail counted as sane")
	}
}

// A stream through a small ring in random chunks arrives intact.
func TestRandomStream(t *testing.T) {
	r := New(256)
	defer r.Free()
	rng := rand.New(rand.NewSource(1))
	src := make([]byte, 1<<20)
	rng.Read(src)
	var got []byte
	for w := 0; len(got) < len(src); {
		if w < len(src) {
			n := rng.Intn(300)
			if w+n > len(src) {
				n = len(src) - w
			}
			w += r.Write(src[w : w+n])
		}
		buf := make([]byte, rng.Intn(300)+1)
		got = append(got, buf[:r.Read(buf, false)]...)
		if !r.Sane() {
			t.Fatal("insane")
		}
	}
	if !bytes.Equal(got, src) {
		t.Fatal("stream corrupted")
	}
}
