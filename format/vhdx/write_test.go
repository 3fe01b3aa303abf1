package vhdx_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

func openRW(t testing.TB, path string) (*vhdx.Layer, *os.File) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := vhdx.Open(path, f, vhdx.Options{})
	if err != nil {
		f.Close()
		t.Fatalf("read-write open: %v", err)
	}
	return l, f
}

func mustClean(t testing.TB, l *vhdx.Layer, when string) {
	t.Helper()
	if ps := l.Check(); len(ps) > 0 {
		t.Fatalf("%s: Check: %v", when, ps)
	}
}

// randWrite picks a write: offsets near block, chunk and sector edges or
// anywhere; lengths from a byte to a few blocks; random or zero content.
func randWrite(rng *rand.Rand, size, bs int64, lss int) (int64, []byte) {
	var off int64
	switch rng.IntN(5) {
	case 0: // at a block edge
		off = rng.Int64N((size+bs-1)/bs)*bs + rng.Int64N(2*int64(lss)) - int64(lss)
	case 1: // near the end
		off = size - rng.Int64N(3*bs)
	case 2: // near the first chunk edge
		off = (1<<23)*int64(lss) + rng.Int64N(2*bs) - bs
	default:
		off = rng.Int64N(size)
	}
	if rng.IntN(2) == 0 {
		off &^= int64(lss) - 1
	}
	off = min(max(off, 0), size-1)
	var n int64
	switch rng.IntN(4) {
	case 0:
		n = 1 + rng.Int64N(2*int64(lss))
	case 1:
		n = 4096
	case 2:
		n = 1 + rng.Int64N(256<<10)
	default:
		n = 1 + rng.Int64N(min(3*bs, 4<<20))
	}
	n = min(n, size-off)
	p := make([]byte, n)
	if rng.IntN(5) != 0 {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	}
	return off, p
}

type writeCase struct {
	diff bool
	bs   int64
	lss  int
	size int64
}

func (c writeCase) String() string {
	k := "dyn"
	if c.diff {
		k = "diff"
	}
	return fmt.Sprintf("%s-%dM-%d-%dM", k, c.bs>>20, c.lss, c.size>>20)
}

// buildCase writes a random layer (and a random parent for a child) into
// dir and returns the chain's model, top first.
func buildCase(t testing.TB, rng *rand.Rand, dir string, c writeCase) []*tLayer {
	top := randomLayer(rng, "top.vhdx", 1, c.size, c.bs, c.lss, c.diff)
	chain := []*tLayer{top}
	if c.diff {
		par := randomLayer(rng, "parent.vhdx", 2, c.size-c.bs/2*int64(rng.IntN(2)), c.bs, c.lss, false)
		par.size &^= int64(c.lss) - 1
		link(rng, top, par)
		chain = append(chain, par)
	}
	if err := writeChain(rng, dir, chain); err != nil {
		t.Fatal(err)
	}
	return chain
}

// TestWriteModel writes random data through the layer into dynamic and
// differencing files of 1, 2 and 32 MiB blocks and 512 and 4096-byte
// sectors, reopening now and then, and compares every write's range and
// finally the disk with a model: the builder's model of the chain, with the
// test's writes laid over it. The parent file never changes; every reopen
// checks clean.
func TestWriteModel(t *testing.T) {
	var cases []writeCase
	for _, diff := range []bool{false, true} {
		for _, bs := range []int64{1 << 20, 2 << 20, 32 << 20} {
			for _, lss := range []int{512, 4096} {
				cases = append(cases, writeCase{diff, bs, lss, 100<<20 + int64(3*lss)})
			}
		}
		// Past the first chunk (4 GiB of 512-byte sectors).
		cases = append(cases, writeCase{diff, 1 << 20, 512, 4<<30 + 40<<20})
	}
	for i, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(i), 10))
			dir := t.TempDir()
			chain := buildCase(t, rng, dir, c)
			var parentSum string
			if c.diff {
				parentSum = sumFile(t, filepath.Join(dir, "parent.vhdx"))
			}
			below := modelBelow(chain[1:])
			m := newModel(chain)
			path := filepath.Join(dir, "top.vhdx")
			l, f := openRW(t, path)
			mustClean(t, l, "first open")
			var ranges [][2]int64
			for w := 0; w < 60; w++ {
				off, p := randWrite(rng, c.size, c.bs, c.lss)
				if n, err := l.WriteAt(p, off, below); err != nil || n != len(p) {
					t.Fatalf("write %d: %d bytes at %d: %d, %v", w, len(p), off, n, err)
				}
				m.write(p, off)
				lo, hi := max(off-int64(c.lss), 0), min(off+int64(len(p))+int64(c.lss), c.size)
				ranges = append(ranges, [2]int64{lo, hi})
				if got, want := readLayer(t, l, below, lo, hi-lo), m.read(lo, hi-lo); !bytes.Equal(got, want) {
					t.Fatalf("write %d (%d bytes at %d): the range reads differently from the model at byte %d", w, len(p), off, firstDiff(got, want)+lo)
				}
				if w%20 == 19 {
					l.Close()
					l, f = openRW(t, path)
					mustClean(t, l, fmt.Sprintf("reopen after write %d", w))
				}
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			l.Close()
			_ = f
			l, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			mustClean(t, l, "final")
			if c.size <= 256<<20 {
				ranges = [][2]int64{{0, c.size}}
			}
			for _, r := range ranges {
				for off := r[0]; off < r[1]; off += 8 << 20 {
					n := min(8<<20, r[1]-off)
					if got, want := readLayer(t, l, below, off, n), m.read(off, n); !bytes.Equal(got, want) {
						t.Fatalf("final read at %d differs from the model at byte %d", off, firstDiff(got, want)+off)
					}
				}
			}
			if c.diff {
				if s := sumFile(t, filepath.Join(dir, "parent.vhdx")); s != parentSum {
					t.Fatal("the parent file changed")
				}
			}
		})
	}
}

func mustOpen(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func firstDiff(a, b []byte) int64 {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return int64(i)
		}
	}
	return int64(len(a))
}

// TestReadWriteOpenUnchanged: a read-write open without writes leaves the
// file byte for byte as it was; the first write updates both headers once
// (sequence numbers +1 and +2, new FileWriteGuid and DataWriteGuid).
func TestReadWriteOpenUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	img := buildBytes(t, rng, smallLayer(rng, false))
	f := newRWFile(img)
	f.record = true
	l, err := vhdx.Open("/x/a.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if len(f.ops) != 0 || !bytes.Equal(f.bytesAt(0, int64(len(img))), img) || f.size != int64(len(img)) {
		t.Fatalf("a read-write open without writes changed the file: %d operations", len(f.ops))
	}
	before, _ := vhdx.Open("/x/a.vhdx", f, vhdx.Options{ReadOnly: true})
	bi, _ := before.Info()
	l, err = vhdx.Open("/x/a.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := l.WriteAt([]byte{1, 2, 3}, int64(i)*5000, nil); err != nil {
			t.Fatal(err)
		}
	}
	hdrWrites := 0
	for _, o := range f.ops {
		if o.kind == 'w' && o.off >= 64<<10 && o.off < 192<<10 {
			hdrWrites++
		}
	}
	if hdrWrites != 2 {
		t.Fatalf("%d header writes in a session; want 2", hdrWrites)
	}
	after, err := vhdx.Open("/x/a.vhdx", f, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ai, _ := after.Info()
	var bcur, acur *vhdx.Header
	for _, h := range bi.Headers {
		if h.Current {
			bcur = h.Header
		}
	}
	for _, h := range ai.Headers {
		if !h.Valid {
			t.Fatalf("header %d is not valid after the update: %s", h.Index, h.Error)
		}
		if h.Current {
			acur = h.Header
		}
	}
	if acur.SequenceNumber != bcur.SequenceNumber+2 || acur.FileWriteGUID == bcur.FileWriteGUID || acur.DataWriteGUID == bcur.DataWriteGUID || !acur.LogGUID.IsZero() {
		t.Fatalf("header before %+v, after %+v", bcur, acur)
	}
}

// TestReadWriteRefusedDamaged: a read-write open of an image whose check
// finds a problem is refused, naming the problem and read-only opening.
func TestReadWriteRefusedDamaged(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	img := buildBytes(t, rng, smallLayer(rng, false))
	// Break the CRC of region table 2: reads use copy 1; Check reports it.
	img[256<<10+100] ^= 1
	_, err := vhdx.Open("/x/a.vhdx", newRWFile(img), vhdx.Options{})
	if !errors.Is(err, layer.ErrCorrupt) || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), "region table 2") {
		t.Fatalf("read-write open of a damaged image: %v", err)
	}
	if _, err := vhdx.Open("/x/a.vhdx", newRWFile(img), vhdx.Options{ReadOnly: true}); err != nil {
		t.Fatalf("read-only open: %v", err)
	}
}

// TestReadWriteTornHeader: one torn header (what a crash during a header
// update leaves) is reported by Check but does not refuse a read-write open:
// the first write's header update rewrites that slot, and the image then
// checks clean with both headers valid.
func TestReadWriteTornHeader(t *testing.T) {
	for _, which := range []string{"older", "current"} {
		t.Run(which, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 3))
			img := buildBytes(t, rng, smallLayer(rng, false))
			h := curHeader(img)
			if which == "older" {
				h = 64<<10 + 128<<10 - h
			}
			img[h+100] ^= 1 // a reserved byte: only the CRC-32C fails
			ro, err := vhdx.Open("/x/a.vhdx", newRWFile(img), vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if ps := ro.Check(); len(ps) != 1 || !strings.Contains(ps[0].Msg, "header") {
				t.Fatalf("Check of a torn header: %v", ps)
			}
			f := newRWFile(img)
			l, err := vhdx.Open("/x/a.vhdx", f, vhdx.Options{})
			if err != nil {
				t.Fatalf("read-write open with one torn header: %v", err)
			}
			p := bytes.Repeat([]byte{0xd7}, 4096)
			if _, err := l.WriteAt(p, 8192, nil); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			after, err := vhdx.Open("/x/a.vhdx", f, vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if ps := after.Check(); len(ps) != 0 {
				t.Fatalf("Check after the write: %v", ps)
			}
			if got := readLayer(t, after, nil, 8192, int64(len(p))); !bytes.Equal(got, p) {
				t.Fatal("the write does not read back")
			}
		})
	}
}

// TestWriteReadOnly: WriteAt on a read-only layer fails.
func TestWriteReadOnly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	img := buildBytes(t, rng, smallLayer(rng, false))
	l, err := vhdx.Open("/x/a.vhdx", newRWFile(img), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.WriteAt([]byte{1}, 0, nil); !errors.Is(err, vhdx.ErrReadOnly) {
		t.Fatalf("WriteAt read-only: %v", err)
	}
}

// TestWriteZerosAllocateNothing: all-zero writes into a dynamic file's
// unallocated blocks leave the BAT and the file size alone; in a child they
// allocate (the parent may hold data there).
func TestWriteZerosAllocateNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	l0 := smallLayer(rng, false)
	img := buildBytes(t, rng, l0)
	f := newRWFile(img)
	l, err := vhdx.Open("/x/a.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var allocs []int64
	l.NotifyAlloc(func(off, n int64) { allocs = append(allocs, off) }, nil)
	size := f.size
	if _, err := l.WriteAt(make([]byte, 3<<20), 1<<20, nil); err != nil { // blocks 1 (ZERO), 2, 3 (NOT_PRESENT)
		t.Fatal(err)
	}
	if f.size != size || len(allocs) != 0 {
		t.Fatalf("zero write allocated: size %d -> %d, allocs %v", size, f.size, allocs)
	}
	if _, err := l.WriteAt([]byte{9}, 2<<20+7, nil); err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0] != 2<<20 {
		t.Fatalf("allocs %v; want [%d]", allocs, 2<<20)
	}
}

// TestConcurrentWrites: writers on different and same blocks, and readers,
// in parallel (run under -race); the result matches a model in which the
// writers' ranges do not overlap.
func TestConcurrentWrites(t *testing.T) {
	for _, diff := range []bool{false, true} {
		t.Run(fmt.Sprint("diff=", diff), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 12))
			dir := t.TempDir()
			c := writeCase{diff, 1 << 20, 512, 64 << 20}
			chain := buildCase(t, rng, dir, c)
			below := modelBelow(chain[1:])
			path := filepath.Join(dir, "top.vhdx")
			l, _ := openRW(t, path)
			defer l.Close()
			m := newModel(chain)
			const writers = 8
			// Writer w owns the sectors s with s%writers == w of the
			// first 16 MiB (same blocks, different sectors) and the
			// 1 MiB blocks b with b%writers == w of the rest.
			var plans [writers][]struct {
				off int64
				p   []byte
			}
			for w := 0; w < writers; w++ {
				for k := 0; k < 40; k++ {
					var off int64
					var n int
					if k%2 == 0 {
						off = (rng.Int64N(16<<20/512/writers)*writers + int64(w)) * 512
						n = 512
					} else {
						b := 16 + rng.Int64N(48/writers)*writers + int64(w)
						off = b<<20 + rng.Int64N(1<<20-8192)
						n = 1 + rng.IntN(8191)
					}
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.Uint32())
					}
					m.write(p, off)
					plans[w] = append(plans[w], struct {
						off int64
						p   []byte
					}{off, p})
				}
			}
			var wg sync.WaitGroup
			errs := make(chan error, writers+2)
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for _, x := range plans[w] {
						if _, err := l.WriteAt(x.p, x.off, below); err != nil {
							errs <- err
							return
						}
					}
				}(w)
			}
			stop := make(chan struct{})
			var rg sync.WaitGroup
			for r := 0; r < 2; r++ {
				rg.Add(1)
				go func() {
					defer rg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := l.Map(nil, 0, c.size); err != nil {
							errs <- err
							return
						}
						l.Extent(0, c.size)
					}
				}()
			}
			wg.Wait()
			close(stop)
			rg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for off := int64(0); off < c.size; off += 8 << 20 {
				if got, want := readLayer(t, l, below, off, 8<<20), m.read(off, 8<<20); !bytes.Equal(got, want) {
					t.Fatalf("after concurrent writes, reads differ from the model at %d", firstDiff(got, want)+off)
				}
			}
			mustClean(t, l, "after concurrent writes")
		})
	}
}

var _ io.ReaderAt = readerFunc(nil)

// BenchmarkRandom4KChild: random 4 KiB writes into a new, empty 16 GiB
// differencing child (the parent is never read: the writes are aligned),
// in a real file; most writes allocate a block.
func BenchmarkRandom4KChild(b *testing.B) {
	for _, bs := range []int64{2 << 20, 32 << 20} {
		b.Run(fmt.Sprint(bs>>20, "M"), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			dir := b.TempDir()
			child := &tLayer{name: "c.avhdx", id: 1, size: 16 << 30, bs: bs, lss: 512, pss: 4096, diff: true,
				states: map[int64]int{}, bits: map[int64][]bool{},
				locator: []tKV{{"parent_linkage", "{01020304-0506-0708-090a-0b0c0d0e0f10}"}, {"relative_path", `.\p.vhdx`}}}
			if err := child.build(rng, filepath.Join(dir, child.name)); err != nil {
				b.Fatal(err)
			}
			l, _ := openRW(b, filepath.Join(dir, child.name))
			defer l.Close()
			p := rnd(rng, 4096)
			offs := make([]int64, 1<<16)
			for i := range offs {
				offs[i] = rng.Int64N(16<<30/4096) * 4096
			}
			b.SetBytes(4096)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := l.WriteAt(p, offs[i%len(offs)], nil); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			l.Sync()
		})
	}
}

// TestWriteZerosChild: in a child, an all-zero write into a NOT_PRESENT
// block allocates it (the parent may hold data there) and is reported once
// through NotifyAlloc; into a ZERO block it changes nothing.
func TestWriteZerosChild(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	c := smallLayer(rng, true) // blocks 1 ZERO, 3 NOT_PRESENT, 7 PARTIALLY_PRESENT
	f := newRWFile(buildBytes(t, rng, c))
	l, err := vhdx.Open("/x/c.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var allocs [][2]int64
	l.NotifyAlloc(func(off, n int64) { allocs = append(allocs, [2]int64{off, n}) }, nil)
	size := f.size
	if _, err := l.WriteAt(make([]byte, 4096), 1<<20+4096, nil); err != nil {
		t.Fatal(err)
	}
	if f.size != size || len(allocs) != 0 {
		t.Fatalf("zeros into a ZERO block of a child: size %d -> %d, allocs %v", size, f.size, allocs)
	}
	if _, err := l.WriteAt(make([]byte, 4096), 3<<20+4096, readerFunc(func(p []byte, off int64) (int, error) {
		for i := range p {
			p[i] = 0xCC
		}
		return len(p), nil
	})); err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0] != [2]int64{3 << 20, 1 << 20} {
		t.Fatalf("allocs %v; want [[%d %d]]", allocs, 3<<20, 1<<20)
	}
	runs, err := l.Map(nil, 3<<20, 1<<20)
	if err != nil || len(runs) != 3 || runs[0].State != layer.Parent || runs[1].State != layer.Data || runs[1].Len != 4096 || runs[2].State != layer.Parent {
		t.Fatalf("block 3 maps as %+v, %v; want parent, 4096 bytes of data, parent", runs, err)
	}
}

// BenchmarkSeq1MDynamic: sequential 1 MiB writes into a new, empty 4 GiB
// dynamic file of 32 MiB blocks, in a real file.
func BenchmarkSeq1MDynamic(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	dir := b.TempDir()
	d := &tLayer{name: "d.vhdx", id: 1, size: 4 << 30, bs: 32 << 20, lss: 512, pss: 4096, states: map[int64]int{}, bits: map[int64][]bool{}}
	if err := d.build(rng, filepath.Join(dir, d.name)); err != nil {
		b.Fatal(err)
	}
	l, _ := openRW(b, filepath.Join(dir, d.name))
	defer l.Close()
	p := rnd(rng, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.WriteAt(p, int64(i%4096)<<20, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentReadsSeeOldOrNew: while writers fill the sectors of new
// blocks of a child (each sector written once, in random order), readers
// mapping and reading the same range see every sector either as the parent
// shows it or as written, never anything else.
func TestConcurrentReadsSeeOldOrNew(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	dir := t.TempDir()
	chain := buildCase(t, rng, dir, writeCase{true, 1 << 20, 512, 64 << 20})
	below := modelBelow(chain[1:])
	l, _ := openRW(t, filepath.Join(dir, "top.vhdx"))
	defer l.Close()
	const span = 8 << 20
	before := readLayer(t, l, below, 0, span)
	newSector := func(s int64) []byte { return bytes.Repeat([]byte{byte(s*7 + 1), byte(s >> 3)}, 256) }
	const writers = 4
	order := rng.Perm(span / 512)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for _, s := range order {
				if s%writers != w {
					continue
				}
				if _, err := l.WriteAt(newSector(int64(s)), int64(s)*512, below); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	stop := make(chan struct{})
	var rg sync.WaitGroup
	for r := 0; r < 2; r++ {
		rg.Add(1)
		go func(seed uint64) {
			defer rg.Done()
			rr := rand.New(rand.NewPCG(seed, 1))
			buf := make([]byte, 256<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := rr.Int64N((span-int64(len(buf)))/512) * 512
				runs, err := l.Map(nil, off, int64(len(buf)))
				if err != nil {
					errs <- err
					return
				}
				pos := int64(0)
				for _, r := range runs {
					dst := buf[pos : pos+r.Len]
					switch r.State {
					case layer.Data:
						err = l.ReadData(dst, r.FileOff)
					case layer.Parent:
						_, err = below.ReadAt(dst, off+pos)
					default:
						clear(dst)
					}
					if err != nil {
						errs <- err
						return
					}
					pos += r.Len
				}
				for k := int64(0); k < int64(len(buf)); k += 512 {
					s := (off + k) / 512
					g := buf[k : k+512]
					if !bytes.Equal(g, before[off+k:off+k+512]) && !bytes.Equal(g, newSector(s)) {
						errs <- fmt.Errorf("sector %d read concurrently is neither old nor new", s)
						return
					}
				}
			}
		}(uint64(r))
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := readLayer(t, l, below, 0, span)
	for s := int64(0); s < span/512; s++ {
		if !bytes.Equal(got[s*512:s*512+512], newSector(s)) {
			t.Fatalf("sector %d: not as written", s)
		}
	}
	mustClean(t, l, "after the concurrent writes")
}
