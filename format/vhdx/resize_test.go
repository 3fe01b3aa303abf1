package vhdx_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// The resize tests build an image with the test builder, resize a copy
// through the layer while recording every write, truncate, punch and sync,
// then rebuild the file as a crash after each of them would leave it: each
// cut must open read-only and read-write, check clean, have the old or the
// new size, and read as the builder's model (the old disk's bytes up to the
// smaller size, zeros past the old end).

// batEntryAt returns BAT entry idx of a built image (BAT at 3 MiB).
func batEntryAt(img []byte, idx int64) uint64 {
	return binary.LittleEndian.Uint64(img[3<<20+8*idx:])
}

// stale writes 0xEE over bytes [from, to) of payload block b's space in a
// built image, as an earlier shrink may have left them.
func stale(img []byte, l *tLayer, b, from, to int64) {
	e := batEntryAt(img, b+b/l.ratio())
	fo := int64(e>>20) << 20
	for i := fo + from; i < fo+to && i < int64(len(img)); i++ {
		img[i] = 0xEE
	}
}

// resizeWindows are the ranges of the disk a cut is compared over: the
// start, around the old end and around the new end, clipped to size.
func resizeWindows(old, size, cut int64) [][2]int64 {
	var out [][2]int64
	for _, w := range [][2]int64{{0, 8 << 20}, {old - 4<<20, old + 4<<20}, {size - 4<<20, size}, {min(old, size) - 8<<20, min(old, size)}} {
		lo, hi := max(w[0], 0), min(w[1], cut)
		if lo < hi {
			out = append(out, [2]int64{lo, hi})
		}
	}
	return out
}

// resizeRun resizes a copy of img (chain: the model, top first) to size and
// checks every cut. It returns the final file.
func resizeRun(t *testing.T, img []byte, chain []*tLayer, size int64, shrink bool) *rwFile {
	t.Helper()
	top := chain[0]
	old := top.size
	below := modelBelow(chain[1:])
	below0 := int64(0) // the parent's size: a child's new blocks past it become ZERO
	if len(chain) > 1 {
		below0 = chain[1].size
	}
	f := newRWFile(img)
	f.record = true
	l, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatalf("read-write open: %v", err)
	}
	f.tag = 1
	if got, err := l.Resize(size, shrink, below0); err != nil || got != old {
		t.Fatalf("Resize(%d): old %d, %v", size, got, err)
	}
	if l.Size() != size {
		t.Fatalf("after Resize(%d) the layer says %d bytes", size, l.Size())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ops := f.ops
	kinds := map[byte]int{}
	for _, o := range ops {
		kinds[o.kind]++
	}
	t.Logf("resize %d -> %d: %d operations (%d writes, %d truncates, %d syncs, %d punches); checking every cut", old, size, len(ops), kinds['w'], kinds['t'], kinds['s'], kinds['p'])
	sawNew := false
	for i := 0; i <= len(ops); i++ {
		g := newRWFile(img)
		for _, o := range ops[:i] {
			g.apply(o)
		}
		for _, rw := range []bool{false, true} {
			c, err := vhdx.Open("/c/top.vhdx", g.clone(), vhdx.Options{ReadOnly: !rw})
			if err != nil {
				t.Fatalf("cut %d/%d: open (rw %v): %v", i, len(ops), rw, err)
			}
			if ps := c.Check(); len(ps) > 0 {
				t.Fatalf("cut %d/%d: Check (rw %v): %v", i, len(ops), rw, ps)
			}
			cs := c.Size()
			if cs != old && cs != size {
				t.Fatalf("cut %d/%d: size %d, neither %d nor %d", i, len(ops), cs, old, size)
			}
			sawNew = sawNew || cs == size
			if i == len(ops) && cs != size {
				t.Fatalf("after the resize the size is %d, not %d", cs, size)
			}
			for _, r := range resizeWindows(old, size, cs) {
				got := readLayer(t, c, below, r[0], r[1]-r[0])
				want := expect(chain, r[0], r[1]-r[0]) // zeros past the old end
				if !bytes.Equal(got, want) {
					t.Fatalf("cut %d/%d (rw %v, size %d): range %d-%d differs from the model at %d", i, len(ops), rw, cs, r[0], r[1], r[0]+firstDiff(got, want))
				}
			}
			c.Close()
		}
	}
	if !sawNew {
		t.Fatal("no cut had the new size")
	}
	return f
}

func currentHeader(t *testing.T, f *rwFile) *vhdx.Header {
	t.Helper()
	l, err := vhdx.Open("/c/top.vhdx", f.clone(), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	in, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range in.Headers {
		if h.Current {
			return h.Header
		}
	}
	t.Fatal("no current header")
	return nil
}

// TestResizeCrash: grow and shrink dynamic, fixed and differencing files
// (512 and 4096-byte sectors, 1 and 32 MiB blocks), a last block with stale
// bytes or set bits past the old end, a grow that needs a new BAT region,
// a grow across a chunk boundary; every cut of each.
func TestResizeCrash(t *testing.T) {
	const mib = 1 << 20
	type tc struct {
		name   string
		mk     func(rng *rand.Rand) []*tLayer // top first
		poke   func(img []byte, top *tLayer)
		size   int64
		shrink bool
	}
	dyn := func(lss int, bs, size int64, fixed bool) func(rng *rand.Rand) []*tLayer {
		return func(rng *rand.Rand) []*tLayer {
			l := &tLayer{name: "top.vhdx", id: 5, size: size, bs: bs, lss: lss, pss: 4096, fixed: fixed, states: map[int64]int{}, bits: map[int64][]bool{}}
			nb := l.nblocks()
			for b := int64(0); b < nb; b++ {
				if fixed || b%3 == 0 || b == nb-1 {
					l.states[b] = tFully
				}
			}
			if !fixed && nb > 2 {
				l.states[1] = tZero
			}
			return []*tLayer{l}
		}
	}
	child := func(lss int, bs, size int64) func(rng *rand.Rand) []*tLayer {
		return func(rng *rand.Rand) []*tLayer {
			par := &tLayer{name: "p.vhdx", id: 9, size: size, bs: bs, lss: lss, pss: 4096, states: map[int64]int{}, bits: map[int64][]bool{}}
			for i := range par.dataWrite {
				par.dataWrite[i] = byte(0x30 + i)
			}
			c := &tLayer{name: "top.vhdx", id: 3, size: size, bs: bs, lss: lss, pss: 4096, diff: true, states: map[int64]int{}, bits: map[int64][]bool{}}
			for i := range c.dataWrite {
				c.dataWrite[i] = byte(0x60 + i)
			}
			nb := c.nblocks()
			spb := bs / int64(lss)
			for b := int64(0); b < nb; b++ {
				par.states[b] = tFully
				switch b % 3 {
				case 0:
					c.states[b] = tPartial
					bits := make([]bool, spb)
					for i := range bits {
						bits[i] = i%5 != 2
					}
					c.bits[b] = bits
				case 1:
					c.states[b] = tFully
				}
			}
			// The last block partial, with bits set past the end.
			c.states[nb-1] = tPartial
			bits := make([]bool, spb)
			for i := range bits {
				bits[i] = i%2 == 0
			}
			c.bits[nb-1] = bits
			link(rng, c, par)
			return []*tLayer{c, par}
		}
	}
	staleTail := func(img []byte, top *tLayer) {
		b := top.nblocks() - 1
		if top.state(b) == tFully || top.state(b) == tPartial {
			stale(img, top, b, top.size-b*top.bs, min(top.bs, (top.size-b*top.bs+mib-1)/mib*mib))
		}
	}
	// staleEntries: besides staleTail, the BAT entries of the two blocks
	// after the last (unused, inside the BAT region) point at block 0's
	// data, as a shrink by another writer may leave them: growing must
	// not show it.
	staleEntries := func(img []byte, top *tLayer) {
		staleTail(img, top)
		e := batEntryAt(img, 0)
		for b := top.nblocks(); b < top.nblocks()+2; b++ {
			binary.LittleEndian.PutUint64(img[3<<20+8*(b+b/top.ratio()):], e)
		}
	}
	cases := []tc{
		{name: "dynamic-512-1M-grow", mk: dyn(512, mib, 20*mib-3*512, false), poke: staleEntries, size: 40*mib + 512},
		{name: "dynamic-4096-1M-grow", mk: dyn(4096, mib, 20*mib-4096, false), poke: staleTail, size: 33 * mib},
		{name: "dynamic-512-32M-grow", mk: dyn(512, 32*mib, 40*mib-512, false), poke: staleTail, size: 100 * mib},
		{name: "dynamic-512-1M-shrink", mk: dyn(512, mib, 20*mib, false), size: 17*mib + 512, shrink: true},
		{name: "fixed-512-1M-grow", mk: dyn(512, mib, 10*mib-1024, true), poke: staleTail, size: 20*mib + 4096},
		{name: "fixed-4096-32M-grow", mk: dyn(4096, 32*mib, 40*mib, true), size: 70 * mib},
		{name: "fixed-512-1M-shrink", mk: dyn(512, mib, 12*mib, true), size: 9 * mib, shrink: true},
		{name: "child-512-1M-grow", mk: child(512, mib, 12*mib-1536), poke: staleEntries, size: 30 * mib},
		{name: "child-4096-1M-grow", mk: child(4096, mib, 12*mib-4096), size: 16 * mib},
		{name: "child-512-32M-grow", mk: child(512, 32*mib, 40*mib-512), size: 70 * mib},
		{name: "child-512-1M-shrink", mk: child(512, mib, 12*mib), size: 6 * mib, shrink: true},
		{name: "dynamic-512-1M-newBAT", mk: dyn(512, mib, 8*mib, false), size: 200 << 30},
		{name: "child-512-1M-newBAT", mk: child(512, mib, 8*mib), size: 130 << 30},
		{name: "child-512-1M-chunk", mk: child(512, mib, 8*mib), size: 5 << 30},
		{name: "dynamic-512-1M-chunk", mk: dyn(512, mib, 8*mib, false), size: 9 << 30},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(61, uint64(i)))
			chain := c.mk(rng)
			top := chain[0]
			past := func(fn func(b int64)) {
				for b := (c.size + top.bs - 1) / top.bs; b < top.nblocks(); b++ {
					fn(b)
				}
			}
			if c.shrink {
				// Nothing stored past the new end but zeros: no set bit.
				past(func(b int64) {
					if top.state(b) == tPartial {
						delete(top.states, b)
					}
				})
			}
			img := buildBytes(t, rng, top)
			if c.poke != nil {
				c.poke(img, top)
			}
			if c.shrink {
				// FULLY_PRESENT blocks past the new end hold zeros (the
				// model: ZERO).
				past(func(b int64) {
					if top.state(b) == tFully {
						fo := int64(batEntryAt(img, b+b/top.ratio())>>20) << 20
						clear(img[fo:min(int64(len(img)), fo+top.bs)])
						top.states[b] = tZero
					}
				})
			}
			oldDW := currentHeaderOf(t, img).DataWriteGUID
			batches := []int{0}
			if c.shrink {
				batches = append(batches, 1) // a sync and punches per released block
			}
			for _, batch := range batches {
				old := vhdx.SetReleaseBatch(batch)
				f := resizeRun(t, img, chain, c.size, c.shrink)
				vhdx.SetReleaseBatch(old)
				h := currentHeader(t, f)
				wantNew := c.shrink && top.diff
				if (h.DataWriteGUID != oldDW) != wantNew {
					t.Errorf("DataWriteGuid %s -> %s; want a new one: %v", oldDW, h.DataWriteGUID, wantNew)
				}
			}
		})
	}
}

func currentHeaderOf(t *testing.T, img []byte) *vhdx.Header {
	return currentHeader(t, newRWFile(img))
}

// TestResizeRefusals: a smaller size without shrink, a shrink over data
// (a FULLY_PRESENT block, a set bit of a PARTIALLY_PRESENT one), sizes that
// are not a multiple of the sector or too large, a read-only layer: each
// refused, the file unchanged.
func TestResizeRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(62, 1))
	dyn := smallLayer(rng, false)
	dimg := buildBytes(t, rng, dyn)
	par := smallLayer(rng, false)
	par.name, par.id = "p.vhdx", 9
	ch := &tLayer{name: "top.vhdx", id: 3, size: 64 << 20, bs: 1 << 20, lss: 4096, pss: 4096, diff: true,
		states: map[int64]int{40: tPartial}, bits: map[int64][]bool{40: make([]bool, 256)}}
	ch.bits[40][200] = true
	par.lss = 4096
	link(rng, ch, par)
	cimg := buildBytes(t, rng, ch)
	for _, c := range []struct {
		name   string
		img    []byte
		size   int64
		shrink bool
		ro     bool
		msg    string
	}{
		{"no-shrink", dimg, 32 << 20, false, false, "shrinking must be asked for"},
		{"fully-present", dimg, 63 << 20, true, false, "data at offset"},
		{"partial-bit", cimg, 40<<20 + 100*4096, true, false, "data at offset"},
		{"sector", cimg, 65<<20 + 512, false, false, "multiple of the 4096-byte"},
		{"too-large", dimg, 64<<40 + 512, false, false, "64 TiB"},
		{"read-only", dimg, 65 << 20, false, true, "read-only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newRWFile(c.img)
			l, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{ReadOnly: c.ro})
			if err != nil {
				t.Fatal(err)
			}
			f.record = true
			_, err = l.Resize(c.size, c.shrink, 0)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Resize(%d): %v; want %q", c.size, err, c.msg)
			}
			if c.ro && !errors.Is(err, vhdx.ErrReadOnly) {
				t.Fatalf("read-only: %v is not ErrReadOnly", err)
			}
			for _, o := range f.ops {
				if o.kind != 's' {
					t.Fatalf("a refused resize changed the file (%c at 0x%x)", o.kind, o.off)
				}
			}
			l.Close()
		})
	}
}

// TestResizeShortLastBlock: a grown file whose last block is stored short
// with another block right after it is refused as unsupported.
func TestResizeShortLastBlock(t *testing.T) {
	// Find a layout where the short last block is followed by another.
	for seed := uint64(0); seed < 64; seed++ {
		rng := rand.New(rand.NewPCG(63, seed))
		l := &tLayer{name: "top.vhdx", id: 5, size: 40<<20 - 512, bs: 32 << 20, lss: 512, pss: 4096,
			states: map[int64]int{0: tFully, 1: tFully}, bits: map[int64][]bool{}}
		img := buildBytes(t, rng, l)
		e0, e1 := int64(batEntryAt(img, 0)>>20)<<20, int64(batEntryAt(img, 1)>>20)<<20
		if e0 != e1+8<<20 {
			continue
		}
		f := newRWFile(img)
		x, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = x.Resize(64<<20, false, 0)
		if !errors.Is(err, layer.ErrUnsupported) {
			t.Fatalf("Resize: %v; want ErrUnsupported", err)
		}
		x.Close()
		ro, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{ReadOnly: true})
		if err != nil || ro.Size() != l.size || len(ro.Check()) > 0 {
			t.Fatalf("after the refusal: %v, size %d, %v", err, ro.Size(), ro.Check())
		}
		return
	}
	t.Fatal("no seed put block 0 right after block 1")
}

// TestResizeRegionTableCut: a grow that moves the BAT, cut after region
// table 1 is written and synced and before table 2 is: both tables are
// valid and differ; the image opens, checks clean and reads as before (the
// size is written after both tables); the next resize first makes table 2 a copy of table 1. Each table
// write covers only the first sector of the table.
func TestResizeRegionTableCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(64, 1))
	l := &tLayer{name: "top.vhdx", id: 5, size: 8 << 20, bs: 1 << 20, lss: 512, pss: 4096,
		states: map[int64]int{0: tFully, 7: tFully}, bits: map[int64][]bool{}}
	img := buildBytes(t, rng, l)
	f := newRWFile(img)
	f.record = true
	x, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const size = 200 << 30
	if _, err := x.Resize(size, false, 0); err != nil {
		t.Fatal(err)
	}
	x.Close()
	cut := -1
	for i, o := range f.ops {
		if o.kind == 'w' && o.off >= 192<<10 && o.off < 320<<10 && len(o.data) > 512 {
			t.Fatalf("a region table write of %d bytes at 0x%x: more than one sector", len(o.data), o.off)
		}
		if o.kind == 'w' && o.off == 256<<10 && cut < 0 {
			cut = i
		}
	}
	if cut < 0 {
		t.Fatal("no write to region table 2")
	}
	g := newRWFile(img)
	for _, o := range f.ops[:cut] {
		g.apply(o)
	}
	if bytes.Equal(g.bytesAt(192<<10, 64<<10), g.bytesAt(256<<10, 64<<10)) {
		t.Fatal("the tables are equal at the cut")
	}
	y, err := vhdx.Open("/c/top.vhdx", g, vhdx.Options{})
	if err != nil {
		t.Fatalf("read-write open at the cut: %v", err)
	}
	if ps := y.Check(); len(ps) > 0 || y.Size() != l.size {
		t.Fatalf("at the cut: size %d, %v", y.Size(), ps)
	}
	if got, want := readLayer(t, y, nil, 0, 8<<20), expect([]*tLayer{l}, 0, 8<<20); !bytes.Equal(got, want) {
		t.Fatal("at the cut the disk does not read as before")
	}
	if _, err := y.Resize(size+1<<20, false, 0); err != nil {
		t.Fatal(err)
	}
	y.Close()
	if !bytes.Equal(g.bytesAt(192<<10, 64<<10), g.bytesAt(256<<10, 64<<10)) {
		t.Fatal("after the next resize the region tables still differ")
	}
	z, err := vhdx.Open("/c/top.vhdx", g, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps := z.Check(); len(ps) > 0 || z.Size() != size+1<<20 {
		t.Fatalf("after the next resize: size %d, %v", z.Size(), ps)
	}
}
