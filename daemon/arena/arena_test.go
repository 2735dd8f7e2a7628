package arena

import (
	"bytes"
	"slices"
	"testing"

	"github.com/nuse-project/nuse/internal/shmem"
	"github.com/nuse-project/nuse/shim/abi"
)

func TestLayoutRejectsBadSizes(t *testing.T) {
	for _, c := range []struct{ socks, ring uint32 }{{0, 4096}, {abi.MaxSocksLimit + 1, 4096}, {8, 1000}, {8, 2048}, {8, 3 << 12}} {
		if _, err := NewLayout(c.socks, c.ring); err == nil {
			t.Errorf("NewLayout(%d, %d) accepted", c.socks, c.ring)
		}
	}
	l, err := NewLayout(4, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if l.SocksOff%4096 != 0 || l.SockStride != 4096+2*8192 || l.Size != l.SocksOff+4*l.SockStride {
		t.Fatalf("layout %+v", l)
	}
}

func TestCheckSpan(t *testing.T) {
	for _, c := range []struct {
		head, tail uint64
		ok         bool
	}{{0, 0, true}, {4096, 0, true}, {4097, 0, false}, {5, 6, false}, {1<<63 + 10, 1<<63 + 5, true}, {^uint64(0), ^uint64(0) - 4096, true}} {
		_, err := checkSpan(c.head, c.tail, 4096)
		if (err == nil) != c.ok {
			t.Errorf("checkSpan(%d, %d) = %v", c.head, c.tail, err)
		}
	}
}

func TestSpanWraps(t *testing.T) {
	data := []byte("0123456789abcdef")
	a, b := Span(data, 12, 8)
	if string(a) != "cdef" || string(b) != "0123" {
		t.Fatalf("%q %q", a, b)
	}
	a, b = Span(data, 16+3, 4)
	if string(a) != "3456" || b != nil {
		t.Fatalf("%q %q", a, b)
	}
}

func TestCreateMapShareMemory(t *testing.T) {
	l, _ := NewLayout(4, 4096)
	a, err := Create(l, "test", 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Map(a.FD(), l.Size)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	copy(a.Tx(3), "hello")
	if !bytes.Equal(b.Tx(3)[:5], []byte("hello")) || b.Hdr().SpinNs != 1000 {
		t.Fatal("the two mappings do not share memory")
	}
	a.Reset(3)
	if b.Tx(3)[0] != 'h' {
		t.Fatal("Reset touched the ring pages: a slot reused at once must not fault them in again")
	}
	a.Reclaim(3)
	if b.Tx(3)[0] != 0 {
		t.Fatal("Reclaim did not release the ring pages")
	}
	if _, err := Map(a.FD(), l.Size+4096); err == nil {
		t.Fatal("Map accepted a size that disagrees with the header")
	}
	// Neither end's mapping takes huge pages (internal/shmem).
	for who, m := range map[string]*Arena{"Create": a, "Map": b} {
		fl, err := shmem.VMFlags(m.mem)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(fl, "nh") {
			t.Errorf("%s's mapping has VmFlags %v, no nh (MADV_NOHUGEPAGE)", who, fl)
		}
	}
}

func TestRewindAndSkip(t *testing.T) {
	const size = 64 << 10
	for _, c := range []struct{ head, n, want uint64 }{
		{0, 100, 0},                        // at the start already
		{RewindAt - 1, 100, RewindAt - 1},  // not far enough in
		{RewindAt, 100, size},              // rewound
		{3*size + RewindAt, 100, 4 * size}, // a later lap
		{RewindAt, RewindAt, size},         // fits exactly
		{RewindAt, RewindAt + 1, RewindAt}, // does not fit before head's place
	} {
		if got := Rewind(c.head, size, c.n); got != c.want {
			t.Errorf("Rewind(%d, %d) = %d, want %d", c.head, c.n, got, c.want)
		}
	}
	for _, c := range []struct{ head, tail, skip, want uint64 }{
		{100, 50, 0, 50}, {100, 50, 80, 80}, {100, 50, 100, 100},
		{100, 50, 101, 50}, {100, 50, 40, 50}, {100, 50, 1 << 63, 50},
	} {
		if got := SkipTo(c.head, c.tail, c.skip); got != c.want {
			t.Errorf("SkipTo(head %d, tail %d, skip %d) = %d, want %d", c.head, c.tail, c.skip, got, c.want)
		}
	}
}
