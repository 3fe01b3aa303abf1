package vhdx_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// randDiscard picks a discard: whole blocks (one or several), parts of a
// block at sector, page or byte edges, ranges across blocks.
func randDiscard(rng *rand.Rand, size, bs int64, lss int) (int64, int64) {
	nb := (size + bs - 1) / bs
	var off, n int64
	switch rng.IntN(4) {
	case 0: // whole blocks
		off = rng.Int64N(nb) * bs
		n = bs * (1 + rng.Int64N(3))
	case 1: // part of a block, page-aligned
		off = rng.Int64N(size) &^ 4095
		n = 4096 * (1 + rng.Int64N(64))
	case 2: // anywhere, byte granularity
		off = rng.Int64N(size)
		n = 1 + rng.Int64N(2*int64(lss)+3*4096)
	default: // across a block edge
		off = (1+rng.Int64N(nb))*bs - rng.Int64N(bs)
		n = 1 + rng.Int64N(2*bs)
	}
	off = min(max(off, 0), size-1)
	return off, min(n, size-off)
}

// TestDiscardModel writes and discards at random through the layer into
// dynamic and differencing files (1 and 2 MiB blocks, 512 and 4096-byte
// sectors), with belowHasData from the parent's model content or always
// true, and compares each operation's range and finally the whole disk with
// a model in which a discard writes zeros. Every reopen checks clean; the
// parent never changes. Whole blocks discarded hold no data afterwards
// (their space is given back).
func TestDiscardModel(t *testing.T) {
	type dcase struct {
		writeCase
		allTrue bool // belowHasData always says yes
	}
	var cases []dcase
	for _, diff := range []bool{false, true} {
		for _, bs := range []int64{1 << 20, 2 << 20} {
			for _, lss := range []int{512, 4096} {
				cases = append(cases, dcase{writeCase{diff, bs, lss, 40<<20 + int64(3*lss)}, false})
				if diff {
					cases = append(cases, dcase{writeCase{diff, bs, lss, 40<<20 + int64(3*lss)}, true})
				}
			}
		}
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s-alltrue=%v", c.writeCase, c.allTrue), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(i), 31))
			dir := t.TempDir()
			chain := buildCase(t, rng, dir, c.writeCase)
			var parentSum string
			if c.diff {
				parentSum = sumFile(t, filepath.Join(dir, "parent.vhdx"))
			}
			below := modelBelow(chain[1:])
			hasData := modelHasData(chain[1:])
			if c.allTrue {
				hasData = func(int64, int64) bool { return true }
			}
			m := newModel(chain)
			path := filepath.Join(dir, "top.vhdx")
			l, _ := openRW(t, path)
			mustClean(t, l, "first open")
			var wholeDropped int
			for w := 0; w < 80; w++ {
				var off, n int64
				if rng.IntN(3) == 0 {
					var p []byte
					off, p = randWrite(rng, c.size, c.bs, c.lss)
					n = int64(len(p))
					if _, err := l.WriteAt(p, off, below); err != nil {
						t.Fatalf("op %d: write %d bytes at %d: %v", w, n, off, err)
					}
					m.write(p, off)
				} else {
					off, n = randDiscard(rng, c.size, c.bs, c.lss)
					if err := l.Discard(off, n, below, hasData); err != nil {
						t.Fatalf("op %d: discard %d bytes at %d: %v", w, n, off, err)
					}
					m.write(make([]byte, n), off)
					// Whole blocks in the range hold no data any more.
					for b := (off + c.bs - 1) / c.bs; (b+1)*c.bs <= off+n || (b*c.bs < off+n && off+n == c.size); b++ {
						bn := min(c.bs, c.size-b*c.bs)
						if d := dataRun(t, l, b*c.bs, bn); d > 0 {
							t.Fatalf("op %d: discard %d bytes at %d: whole block %d still holds %d bytes of data", w, n, off, b, d)
						}
						wholeDropped++
					}
				}
				lo, hi := max(off-int64(c.lss), 0), min(off+n+int64(c.lss), c.size)
				if got, want := readLayer(t, l, below, lo, hi-lo), m.read(lo, hi-lo); !bytes.Equal(got, want) {
					t.Fatalf("op %d (%d bytes at %d): the range reads differently from the model at byte %d", w, n, off, firstDiff(got, want)+lo)
				}
				if w%25 == 24 {
					l.Close()
					l, _ = openRW(t, path)
					mustClean(t, l, fmt.Sprintf("reopen after op %d", w))
				}
			}
			if wholeDropped == 0 {
				t.Fatal("no whole block was discarded")
			}
			l.Close()
			l, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			mustClean(t, l, "final")
			if got, want := readLayer(t, l, below, 0, c.size), m.read(0, c.size); !bytes.Equal(got, want) {
				t.Fatalf("final read differs from the model at byte %d", firstDiff(got, want))
			}
			if c.diff {
				if s := sumFile(t, filepath.Join(dir, "parent.vhdx")); s != parentSum {
					t.Fatal("the parent file changed")
				}
			}
		})
	}
}

// dataRun counts the bytes of [off, off+n) that l maps as data.
func dataRun(t testing.TB, l *vhdx.Layer, off, n int64) int64 {
	t.Helper()
	runs, err := l.Map(nil, off, n)
	if err != nil {
		t.Fatal(err)
	}
	var d int64
	for _, r := range runs {
		if r.State == layer.Data {
			d += r.Len
		}
	}
	return d
}

// stBlocks returns the bytes path stores (st_blocks).
func stBlocks(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no st_blocks on this system")
	}
	return st.Blocks * 512
}

// TestDiscardSpace: discarding whole blocks of a dynamic file punches them
// (the file stores about that much less, its BAT maps no data there, and
// the free callback hears of each block); a fixed file (LeaveBlockAllocated)
// keeps every block FULLY_PRESENT and gets holes punched in place; both read
// zeros in the range and check clean.
func TestDiscardSpace(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(map[bool]string{false: "dynamic", true: "fixed"}[fixed], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(41, 1))
			const size, bs = 32 << 20, 1 << 20
			tl := &tLayer{name: "top.vhdx", id: 5, size: size, bs: bs, lss: 512, pss: 4096, fixed: fixed,
				states: map[int64]int{}, bits: map[int64][]bool{}}
			for b := int64(0); b < size/bs; b++ {
				tl.states[b] = tFully
			}
			dir := t.TempDir()
			if err := writeChain(rng, dir, []*tLayer{tl}); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "top.vhdx")
			l, _ := openRW(t, path)
			var freed [][2]int64
			l.NotifyAlloc(func(int64, int64) {}, func(off, n int64) { freed = append(freed, [2]int64{off, n}) })
			before := stBlocks(t, path)
			m := newModel([]*tLayer{tl})
			// Blocks 4-19 whole, plus a ragged edge on each side.
			off, n := int64(4<<20-1000), int64(16<<20+3000)
			if err := l.Discard(off, n, nil, func(int64, int64) bool { return false }); err != nil {
				t.Fatal(err)
			}
			m.write(make([]byte, n), off)
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			after := stBlocks(t, path)
			if before-after < 16<<20-64<<10 {
				t.Fatalf("the file stores %d bytes less after discarding 16 MiB of blocks", before-after)
			}
			if fixed {
				if d := dataRun(t, l, 0, size); d != size {
					t.Fatalf("fixed file: %d bytes mapped as data, want all %d", d, size)
				}
				if len(freed) != 0 {
					t.Fatalf("fixed file: free callback called %v", freed)
				}
			} else {
				if d := dataRun(t, l, 4<<20, 16<<20); d != 0 {
					t.Fatalf("dynamic file: %d bytes of the discarded blocks still mapped", d)
				}
				if len(freed) != 16 || freed[0] != [2]int64{4 << 20, bs} || freed[15] != [2]int64{19 << 20, bs} {
					t.Fatalf("free callback: %v", freed)
				}
			}
			l.Close()
			ro, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			mustClean(t, ro, "after the discard")
			if got, want := readLayer(t, ro, nil, 0, size), m.read(0, size); !bytes.Equal(got, want) {
				t.Fatalf("reads differently from the model at byte %d", firstDiff(got, want))
			}
			if !bytes.Equal(m.read(off, n), make([]byte, n)) {
				t.Fatal("model: the discarded range is not zeros")
			}
		})
	}
}

// TestDiscardReadOnly: a read-only layer refuses, and the range is checked.
func TestDiscardReadOnly(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 1))
	tl := smallLayer(rng, false)
	dir := t.TempDir()
	if err := writeChain(rng, dir, []*tLayer{tl}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, tl.name)
	sum := sumFile(t, path)
	ro, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = ro.Discard(0, 1<<20, nil, func(int64, int64) bool { return false })
	ro.Close()
	if !errors.Is(err, vhdx.ErrReadOnly) {
		t.Fatalf("discard on a read-only layer: %v", err)
	}
	l, _ := openRW(t, path)
	if err := l.Discard(tl.size-512, 1024, nil, func(int64, int64) bool { return false }); err == nil {
		t.Fatal("a discard past the end was accepted")
	}
	l.Close()
	if sumFile(t, path) != sum {
		t.Fatal("a refused discard changed the file")
	}
}
