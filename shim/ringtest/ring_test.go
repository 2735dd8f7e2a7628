package ringtest

import (
	"bytes"
	"math"
	"math/rand"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
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

// nuse_ring_trim gives back every page the ring covers whole but the next
// byte's, and nothing outside the ring.
func TestTrim(t *testing.T) {
	const pg, size = 4096, 4 * 4096
	for _, c := range []struct {
		name     string
		off, pos uint64
		kept     []int // pages of the mapping that keep their bytes
	}{
		// The ring is pages 1-4; the next byte is in its page 2 (mapping page 3).
		{"aligned", pg, 2*pg + 100, []int{0, 3, 5}},
		{"aligned, second page", pg, pg + 5, []int{0, 2, 5}},
		// The next byte at the ring's start, after a wrap.
		{"aligned, wrapped", pg, 3 * size, []int{0, 1, 5}},
		// The ring starts 64 bytes into page 1: pages 1 and 5 are partly
		// the ring's and stay.
		{"unaligned", pg + 64, 10, []int{0, 1, 5}},
		{"unaligned, last page", pg + 64, size - 10, []int{0, 1, 5}},
		{"unaligned, middle", pg + 64, pg + 10, []int{0, 1, 2, 5}},
	} {
		fd, err := unix.MemfdCreate("ringtest", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Ftruncate(fd, 6*pg); err != nil {
			t.Fatal(err)
		}
		mem, err := unix.Mmap(fd, 0, 6*pg, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		for i := range mem {
			mem[i] = 0xAA
		}
		Trim(mem, c.off, size, c.pos)
		for p := 0; p < 6; p++ {
			kept := mem[p*pg] == 0xAA && mem[p*pg+pg-1] == 0xAA
			want := slices.Contains(c.kept, p)
			if kept != want {
				t.Errorf("%s: page %d kept %v, want %v", c.name, p, kept, want)
			}
		}
		unix.Munmap(mem)
	}
}

// A producer that rewinds its empty ring and a consumer that follows the
// skip move every byte in order, and small messages stay in the ring's
// first pages (TestRingsRewind in daemon/usock).
func TestRewind(t *testing.T) {
	const size = 256 << 10
	r := New(size)
	defer r.Free()
	rng := rand.New(rand.NewSource(7))
	var sent, got bytes.Buffer
	rewinds := 0
	for i := 0; i < 20000; i++ {
		n := 1 + rng.Intn(3000)
		if i%500 == 499 {
			n = 1 + rng.Intn(size) // now and then a large one
		}
		msg := make([]byte, n)
		rng.Read(msg)
		for len(msg) > 0 {
			head := r.Head
			w := r.WriteRewind(msg)
			if r.Head-uint64(w) != head {
				rewinds++
				if (r.Head-uint64(w))%size != 0 || !r.Sane() {
					t.Fatalf("rewound to %d (size %d), used %d", r.Head-uint64(w), size, r.Used())
				}
			}
			sent.Write(msg[:w])
			msg = msg[w:]
			buf := make([]byte, 1+rng.Intn(2*size))
			k := r.ReadSkip(buf)
			got.Write(buf[:k])
		}
		for r.Used() > 0 && rng.Intn(2) == 0 {
			buf := make([]byte, size)
			k := r.ReadSkip(buf)
			got.Write(buf[:k])
		}
	}
	for r.Used() > 0 {
		buf := make([]byte, size)
		got.Write(buf[:r.ReadSkip(buf)])
	}
	if !bytes.Equal(sent.Bytes(), got.Bytes()) {
		t.Fatalf("%d bytes sent, %d came out, or not the same", sent.Len(), got.Len())
	}
	if rewinds == 0 {
		t.Fatal("the ring never rewound")
	}
	t.Logf("%d rewinds in %d bytes", rewinds, sent.Len())
}

// The consumer follows a skip only forward, and only up to head: a peer's
// bogus skip moves it at most to head.
func TestStart(t *testing.T) {
	for _, c := range []struct{ head, tail, skip, want uint64 }{
		{100, 50, 0, 50},       // no rewind
		{100, 50, 80, 80},      // rewound past tail
		{100, 50, 100, 100},    // skip at head
		{100, 50, 101, 50},     // a skip past head (published before it): not yet
		{100, 50, 40, 50},      // an old skip, behind tail
		{100, 50, 1 << 63, 50}, // bogus
	} {
		if got := Start(c.head, c.tail, c.skip); got != c.want {
			t.Errorf("start(head %d, tail %d, skip %d) = %d, want %d", c.head, c.tail, c.skip, got, c.want)
		}
	}
}
