package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// testChains returns chains (top first) covering the shapes that matter:
// fixed, dynamic, differencing of several depths, mixed block sizes, a child
// larger than its parent, a partial last block.
func testChains(rng *rand.Rand) map[string][]*tLayer {
	const mb = 1 << 20
	return map[string][]*tLayer{
		"fixed":             {randomLayer(rng, 2, 3*mb+512, 0, 1)},
		"dynamic":           {randomLayer(rng, 3, 9*mb+1536, 2*mb, 1)},
		"dynamic-4k-blocks": {randomLayer(rng, 3, 1*mb, 4096, 1)},
		"diff-over-dynamic": {randomLayer(rng, 4, 6*mb, 2*mb, 2), randomLayer(rng, 3, 6*mb, 2*mb, 1)},
		"diff-3-mixed-bs": {randomLayer(rng, 4, 5*mb, 512<<10, 3), randomLayer(rng, 4, 5*mb, 2*mb, 2),
			randomLayer(rng, 3, 5*mb, 1*mb, 1)},
		"diff-over-fixed":     {randomLayer(rng, 4, 4*mb, 1*mb, 2), randomLayer(rng, 2, 4*mb, 0, 1)},
		"child-larger":        {randomLayer(rng, 4, 8*mb, 2*mb, 2), randomLayer(rng, 3, 3*mb+512, 2*mb, 1)},
		"deep-5-small-blocks": {randomLayer(rng, 4, 2*mb, 64<<10, 5), randomLayer(rng, 4, 2*mb, 128<<10, 4), randomLayer(rng, 4, 2*mb, 64<<10, 3), randomLayer(rng, 4, 2*mb, 256<<10, 2), randomLayer(rng, 3, 2*mb, 512<<10, 1)},
	}
}

func openChain(t testing.TB, chain []*tLayer) (*Disk, []byte) {
	t.Helper()
	fsys := chainFS(chain)
	o := fsys.opts()
	o.ReadOnly = true
	d, err := Open("/img/layer0.vhd", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, flat(chain)
}

// TestRandomReads compares many random reads, and the boundary cases by
// name, with the flat model of each chain.
func TestRandomReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for name, chain := range testChains(rng) {
		t.Run(name, func(t *testing.T) {
			d, want := openChain(t, chain)
			size := int64(len(want))
			if d.Size() != size {
				t.Fatalf("size %d, want %d", d.Size(), size)
			}
			check := func(name string, off int64, n int) {
				t.Helper()
				buf := make([]byte, n)
				for i := range buf {
					buf[i] = 0xEE
				}
				got, err := d.ReadAt(buf, off)
				wantN := int(min(int64(n), max(size-off, 0)))
				if got != wantN {
					t.Fatalf("%s: ReadAt(%d bytes at %d) = %d, want %d", name, n, off, got, wantN)
				}
				if wantN < n && err != io.EOF {
					t.Fatalf("%s: short read with err %v, want io.EOF", name, err)
				}
				if wantN == n && err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !bytes.Equal(buf[:got], want[off:off+int64(got)]) {
					t.Fatalf("%s: ReadAt(%d bytes at %d) differs from the model", name, n, off)
				}
			}
			bs := int64(1 << 20)
			if chain[0].blockSize != 0 {
				bs = chain[0].blockSize
			}
			check("first sector", 0, 512)
			check("one byte", 1, 1)
			check("across a block boundary", bs-700, 1400)
			check("last byte", size-1, 1)
			check("last sector", size-512, 512)
			check("past the end", size-100, 1000)
			check("at Size", size, 10)
			check("whole disk", 0, int(size))
			check("sub-sector across sectors", 510, 4)
			for i := range 400 {
				off := rng.Int64N(size)
				n := 1 + rng.IntN(int(min(size, 3*bs)))
				if i%3 == 0 { // sector-aligned
					off &^= 511
					n = (n + 511) &^ 511
				}
				check(fmt.Sprintf("random %d", i), off, n)
			}
		})
	}
}

// TestConcurrentReads runs ReadAt from many goroutines (run with -race).
func TestConcurrentReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	chain := testChains(rng)["diff-3-mixed-bs"]
	d, want := openChain(t, chain)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 200 {
				off := r.Int64N(d.Size() - 1)
				n := 1 + r.IntN(int(min(d.Size()-off, 3<<20)))
				buf := make([]byte, n)
				if _, err := d.ReadAt(buf, off); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(n)]) {
					errs <- fmt.Errorf("mismatch at %d+%d", off, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestBATPaddingZero: entries past the virtual size are never looked at,
// even when the padding is zeros (vhd-lib, disk2vhd).
func TestBATPaddingZero(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	l := randomLayer(rng, 3, 3<<20, 2<<20, 1) // 2 entries, 126 zero padding entries
	l.batPad = 0
	d, want := openChain(t, []*tLayer{l})
	buf := make([]byte, d.Size())
	if _, err := d.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, want) {
		t.Fatal("differs from the model")
	}
}

// TestBadBlockIsError: a BAT entry pointing past the end of the file or over
// metadata makes reads of that block fail; other blocks still read. Such an
// image is opened read-only only: a read-write open is refused.
func TestBadBlockIsError(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for _, c := range []struct {
		name   string
		sector uint32
		want   string
	}{{"past EOF", 1 << 20, "past the end"}, {"over the header", 2, "overlaps the dynamic header"}, {"over the BAT", 3, "overlaps the BAT"}} {
		t.Run(c.name, func(t *testing.T) {
			l := randomLayer(rng, 3, 4<<20, 2<<20, 1)
			for b := range int64(2) {
				l.blocks[b] = &tBlock{bits: make([]bool, 4096), data: make([]byte, 2<<20)}
				l.blocks[b].bits[0] = true
			}
			img := l.image()
			binary.BigEndian.PutUint32(img[1536+4:], c.sector) // block 1
			fsys := memFS{"/img/x.vhd": newMemFile("/img/x.vhd", img)}
			if d, err := Open("/img/x.vhd", fsys.opts()); err == nil {
				d.Close()
				t.Fatal("opened read-write")
			} else if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--ro") {
				t.Fatalf("read-write open: %v; want ErrCorrupt %q suggesting --ro", err, c.want)
			}
			o := fsys.opts()
			o.ReadOnly = true
			d, err := Open("/img/x.vhd", o)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			buf := make([]byte, 4096)
			if _, err := d.ReadAt(buf, 0); err != nil {
				t.Fatalf("block 0: %v", err)
			}
			_, err = d.ReadAt(buf, 2<<20)
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("block 1: %v, want ErrCorrupt %q", err, c.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Path != "/img/x.vhd" || fe.Off != 1536+4 {
				t.Fatalf("error %#v does not name the file and the BAT entry's offset", err)
			}
		})
	}
}

// TestIOErrorPropagates: an I/O error from the file is returned as such,
// not mistaken for corruption or zeros.
func TestIOErrorPropagates(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	l := randomLayer(rng, 3, 4<<20, 2<<20, 1)
	l.blocks[0] = &tBlock{bits: make([]bool, 4096), data: make([]byte, 2<<20)}
	for i := range l.blocks[0].bits {
		l.blocks[0].bits[i] = true
	}
	f := newMemFile("/img/x.vhd", l.image())
	d, err := Open("/img/x.vhd", memFS{"/img/x.vhd": f}.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	eio := errors.New("injected EIO")
	start := int64(binary.BigEndian.Uint32(f.b[1536:])) * 512
	f.fail, f.failOff = eio, start+512+100
	_, err = d.ReadAt(make([]byte, 4096), 0)
	if !errors.Is(err, eio) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want the injected error", err)
	}
}

// TestFanOutReads: reads of a chain that split into many pieces across the
// files (issued in parallel) return the model's bytes, and an error of any
// one piece is returned, whichever goroutine read it.
func TestFanOutReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	chain := []*tLayer{randomLayer(rng, 4, 8<<20, 64<<10, 3), randomLayer(rng, 4, 8<<20, 128<<10, 2), randomLayer(rng, 3, 8<<20, 256<<10, 1)}
	fsys := chainFS(chain)
	o := fsys.opts()
	o.ReadOnly = true
	d, err := Open("/img/layer0.vhd", o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := flat(chain)
	pieces, err := d.collect(nil, 0, make([]byte, 1<<20), 3<<20)
	if err != nil || len(pieces) < 2*fanOutMax {
		t.Fatalf("a 1 MiB read maps to %d pieces (%v): the chain does not exercise the parallel path", len(pieces), err)
	}
	for _, n := range []int{fanOutMin, 1 << 20, 3<<20 + 512} {
		for _, off := range []int64{0, 512, 3 << 20, int64(len(want) - n)} {
			got := make([]byte, n)
			if _, err := d.ReadAt(got, off); err != nil && err != io.EOF {
				t.Fatalf("read %d at %d: %v", n, off, err)
			}
			if !bytes.Equal(got, want[off:off+int64(n)]) {
				t.Fatalf("read %d at %d differs from the model", n, off)
			}
		}
	}
	eio := errors.New("injected EIO")
	base := fsys["/img/layer2.vhd"]
	base.fail, base.failFrom = eio, int64(len(base.b))-(2<<20)
	if _, err := d.ReadAt(make([]byte, 8<<20), 0); !errors.Is(err, eio) {
		t.Fatalf("got %v, want the injected error", err)
	}
}
