package vhdx_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
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

// writeAndDiscard opens path read-write and makes n random writes and
// discards (a discard is recorded as a write of zeros), with below and
// hasData describing the chain below; it checks the file clean on reopen
// and returns the operations.
func writeAndDiscard(t *testing.T, rng *rand.Rand, path string, n int, below io.ReaderAt, hasData func(off, n int64) bool) []crashWrite {
	t.Helper()
	l, _ := openRW(t, path)
	in, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	size, bs := l.Size(), in.BlockSize
	var ws []crashWrite
	for i := 0; i < n; i++ {
		if i%3 == 0 {
			off, p := randWrite(rng, size, bs, l.SectorSize())
			if _, err := l.WriteAt(p, off, below); err != nil {
				t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
			}
			ws = append(ws, crashWrite{off: off, p: p})
			continue
		}
		off, k := randDiscard(rng, size, bs, l.SectorSize())
		if err := l.Discard(off, k, below, hasData); err != nil {
			t.Fatalf("discard %d bytes at %d: %v", k, off, err)
		}
		ws = append(ws, crashWrite{off: off, p: make([]byte, k)})
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	ro, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	mustClean(t, ro, "after the discards")
	ro.Close()
	return ws
}

// TestDiscardInteropQemuImages: images qemu-img creates (dynamic, fixed),
// filled, then written and discarded through this package, check clean in
// qemu-img and read in qemu-img, 7-Zip and libvhdi as the pristine image
// with the writes and zeros over the discarded ranges laid over it.
func TestDiscardInteropQemuImages(t *testing.T) {
	qemu := needTool(t, "qemu-img")
	for i, opts := range []string{
		"subformat=dynamic,block_size=1M",
		"subformat=dynamic,block_size=8M",
		"subformat=fixed,block_size=1M",
	} {
		t.Run(opts, func(t *testing.T) {
			dir := t.TempDir()
			pristine := filepath.Join(dir, "pristine.vhdx")
			const size = 64 << 20
			if b, err := exec.Command(qemu, "create", "-q", "-f", "vhdx", "-o", opts, pristine, fmt.Sprint(size)).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, b)
			}
			// Data everywhere first (through qemu-io would need another
			// tool: our writes, which the peers then read as the base).
			rng := rand.New(rand.NewPCG(uint64(i), 78))
			l, _ := openRW(t, pristine)
			fill := make([]byte, 1<<20)
			for off := int64(0); off < size; off += int64(len(fill)) {
				for j := range fill {
					fill[j] = byte(rng.Uint32() | 1)
				}
				if _, err := l.WriteAt(fill, off, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			l.Close()
			dir2 := copyTree(t, dir)
			written := filepath.Join(dir2, "pristine.vhdx")
			before := stBlocks(t, written)
			ws := writeAndDiscard(t, rng, written, 45, nil, func(int64, int64) bool { return false })
			if after := stBlocks(t, written); after >= before {
				t.Fatalf("the file stores %d bytes after the discards, %d before", after, before)
			}
			qemuCheck(t, written)
			checkPeers(t, pristine, written, size, ws, map[string]peerStream{"qemu-img": qemuStream, "7zz": sevenZipStream, "libvhdi": libvhdiStream(1)})
		})
	}
}

// TestDiscardInteropChild: a builder child (512 and 4096-byte sectors) over
// a parent holding data, written and discarded through this package (whole
// blocks become ZERO there), reads in 7-Zip as the pristine chain with the
// operations laid over it. (qemu cannot read differencing VHDX; libvhdi
// reads the parent for ZERO blocks of a child, a known bug.)
func TestDiscardInteropChild(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 13))
	for _, lss := range []int{512, 4096} {
		t.Run(fmt.Sprint("child-", lss), func(t *testing.T) {
			dir := t.TempDir()
			base := randomLayer(rng, "base.vhdx", 5, 40<<20, 1<<20, lss, false)
			base.userItem = false
			for b := int64(0); b < base.nblocks(); b++ {
				base.states[b] = tFully
			}
			child := randomLayer(rng, "child.vhdx", 6, 40<<20, 2<<20, lss, true)
			child.userItem = false
			child.locator = []tKV{{"parent_linkage", tGUIDText(base.dataWrite)}, {"relative_path", `.\base.vhdx`},
				{"absolute_win32_path", `C:\VMs\base.vhdx`}}
			if err := writeChain(rng, dir, []*tLayer{child, base}); err != nil {
				t.Fatal(err)
			}
			dir2 := copyTree(t, dir)
			chain := []*tLayer{base}
			ws := writeAndDiscard(t, rng, filepath.Join(dir2, "child.vhdx"), 40, modelBelow(chain), modelHasData(chain))
			checkPeers(t, filepath.Join(dir, "child.vhdx"), filepath.Join(dir2, "child.vhdx"), child.size, ws,
				map[string]peerStream{"7zz": sevenZipStream})
		})
	}
}
