package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhd"
)

// randomWrite picks a write that exercises the interesting shapes:
// sub-sector, unaligned across sectors and blocks, whole blocks, zeros.
func randomWrite(rng *rand.Rand, size, bs int64) (int64, []byte) {
	var off, n int64
	switch rng.IntN(6) {
	case 0: // sub-sector
		off, n = rng.Int64N(size), 1+rng.Int64N(100)
	case 1: // unaligned, up to two blocks
		off, n = rng.Int64N(size), 1+rng.Int64N(2*bs)
	case 2: // whole block
		off, n = rng.Int64N(size/bs)*bs, bs
	case 3: // single aligned sector
		off, n = rng.Int64N(size/512)*512, 512
	case 4: // across a block boundary
		off, n = max(rng.Int64N(size/bs)*bs-700, 0), 1400
	default: // aligned 4 KiB run
		off, n = rng.Int64N(size/4096)*4096, 4096*(1+rng.Int64N(16))
	}
	n = min(n, size-off)
	p := make([]byte, n)
	if rng.IntN(5) != 0 { // one in five writes is zeros
		fillRandom(rng, p)
		for i := len(p) &^ 7; i < len(p); i++ {
			p[i] = byte(rng.Uint32())
		}
	}
	return off, p
}

func checkAll(t *testing.T, d *Disk, model []byte, when string) {
	t.Helper()
	got := make([]byte, len(model))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if !bytes.Equal(got, model) {
		for i := range got {
			if got[i] != model[i] {
				t.Fatalf("%s: first difference at byte %d (sector %d)", when, i, i/512)
			}
		}
	}
}

// TestRandomWrites applies random writes to every chain shape, comparing with
// a flat model after every step and after reopening; parents stay untouched.
func TestRandomWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	for name, chain := range testChains(rng) {
		t.Run(name, func(t *testing.T) {
			fsys := chainFS(chain)
			model := flat(chain)
			parents := map[string][]byte{}
			for p, f := range fsys {
				if p != "/img/layer0.vhd" {
					parents[p] = f.bytes()
				}
			}
			d, err := Open("/img/layer0.vhd", fsys.opts())
			if err != nil {
				t.Fatal(err)
			}
			bs := chain[0].blockSize
			if bs == 0 {
				bs = 1 << 20
			}
			for step := range 250 {
				off, p := randomWrite(rng, d.Size(), bs)
				if rng.IntN(4) == 0 { // a discard of the same shape
					if err := d.Discard(off, int64(len(p))); err != nil {
						t.Fatalf("step %d: Discard(%d bytes at %d): %v", step, len(p), off, err)
					}
					clear(p)
				} else if n, err := d.WriteAt(p, off); err != nil || n != len(p) {
					t.Fatalf("step %d: WriteAt(%d bytes at %d) = %d, %v", step, len(p), off, n, err)
				}
				copy(model[off:], p)
				got := make([]byte, len(p)+1024)
				ro := max(off-512, 0)
				got = got[:min(int64(len(got)), d.Size()-ro)]
				if _, err := d.ReadAt(got, ro); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, model[ro:ro+int64(len(got))]) {
					t.Fatalf("step %d: read-back around a write of %d bytes at %d differs", step, len(p), off)
				}
				if step%50 == 49 {
					checkAll(t, d, model, fmt.Sprintf("step %d", step))
				}
			}
			kept := d.AllocatedBytes()
			d.Close()
			d, err = Open("/img/layer0.vhd", fsys.opts())
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer d.Close()
			checkAll(t, d, model, "after reopening")
			if again := d.AllocatedBytes(); again != kept {
				t.Errorf("AllocatedBytes kept current by writes and discards: %d; counted again after reopening: %d", kept, again)
			}
			for p, b := range parents {
				if !bytes.Equal(fsys[p].bytes(), b) {
					t.Errorf("parent %s was modified", p)
				}
			}
			if probs := d.Check(); len(probs) > 0 {
				t.Errorf("check: %v", probs)
			}
		})
	}
}

// TestWritesOnCreated writes into images made by Create, as real files:
// dynamic, fixed, and a 3-deep chain (dynamic base, two differencing layers,
// each written before its child is made).
func TestWritesOnCreated(t *testing.T) {
	rng := rand.New(rand.NewPCG(32, 32))
	dir := t.TempDir()
	const size = 13<<20 + 512
	for _, typ := range []int{TypeDynamic, TypeFixed} {
		path := filepath.Join(dir, fmt.Sprintf("t%d.vhd", typ))
		if err := Create(path, CreateOptions{Type: typ, Size: size}); err != nil {
			t.Fatal(err)
		}
		model := make([]byte, size)
		writeRandomly(t, rng, path, model, 200)
	}
	model := make([]byte, size)
	prev := filepath.Join(dir, "base.vhd")
	if err := Create(prev, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: 512 << 10}); err != nil {
		t.Fatal(err)
	}
	writeRandomly(t, rng, prev, model, 100)
	for i := range 3 {
		child := filepath.Join(dir, fmt.Sprintf("child%d.vhd", i))
		if err := Create(child, CreateOptions{Parent: prev}); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(prev)
		writeRandomly(t, rng, child, model, 100)
		if after, _ := os.ReadFile(prev); !bytes.Equal(before, after) {
			t.Fatalf("writing %s changed its parent", child)
		}
		prev = child
	}
}

func writeRandomly(t *testing.T, rng *rand.Rand, path string, model []byte, steps int) {
	t.Helper()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, d, model, path+" before writing")
	bs := int64(2 << 20)
	if top := d.layers[0].(*vhd.Layer); top.Type() != "fixed" {
		bs = top.BlockSize()
	}
	for range steps {
		off, p := randomWrite(rng, d.Size(), bs)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	checkAll(t, d, model, path)
	d.Close()
	d, err = Open(path, nil)
	if err != nil {
		t.Fatalf("reopen %s: %v", path, err)
	}
	defer d.Close()
	checkAll(t, d, model, path+" after reopening")
	if probs := d.Check(); len(probs) > 0 {
		t.Errorf("check %s: %v", path, probs)
	}
}

// crashFile stops writing (as if the process were killed) after n WriteAt calls.
type crashFile struct {
	*memFile
	n int
}

var errCrashed = errors.New("crashed")

func (c *crashFile) WriteAt(p []byte, off int64) (int, error) {
	if c.n <= 0 {
		return 0, errCrashed
	}
	c.n--
	return c.memFile.WriteAt(p, off)
}

// PunchHole counts as one write.
func (c *crashFile) PunchHole(off, n int64) error {
	if c.n <= 0 {
		return errCrashed
	}
	c.n--
	return c.memFile.PunchHole(off, n)
}

// TestCrashAtEveryWrite replays one sequence of writes and discards, cut off after each
// possible number of file writes: the image as it is then must open, pass
// Check, and show every WriteAt that completed before the cut.
func TestCrashAtEveryWrite(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 33))
	parent := randomLayer(rng, 3, 4<<20, 1<<20, 1)
	child := randomLayer(rng, 4, 4<<20, 1<<20, 2)
	chain := []*tLayer{child, parent}
	base := chainFS(chain)
	type op struct {
		off     int64
		p       []byte
		discard bool // Discard(off, len(p)); p holds zeros
	}
	var ops []op
	for range 60 {
		off, p := randomWrite(rng, 4<<20, 1<<20)
		o := op{off, p, rng.IntN(3) == 0}
		if o.discard {
			clear(o.p)
		}
		ops = append(ops, o)
	}
	for cut := 0; ; cut++ {
		fsys := memFS{}
		for p, f := range base {
			fsys[p] = newMemFile(p, f.bytes())
		}
		top := &crashFile{fsys["/img/layer0.vhd"], cut}
		o := fsys.opts()
		o.OpenFile = func(path string, write bool) (File, error) {
			if path == "/img/layer0.vhd" {
				return top, nil
			}
			return fsys.open(path, write)
		}
		d, err := Open("/img/layer0.vhd", o)
		if err != nil {
			t.Fatal(err)
		}
		model := flat(chain)
		crashedAt := -1
		for i, op := range ops {
			var err error
			if op.discard {
				err = d.Discard(op.off, int64(len(op.p)))
			} else {
				_, err = d.WriteAt(op.p, op.off)
			}
			if err != nil {
				if !errors.Is(err, errCrashed) {
					t.Fatal(err)
				}
				crashedAt = i
				break
			}
			copy(model[op.off:], op.p)
		}
		// Reopen what is on "disk" now. The sectors of the interrupted write
		// may hold old or new data; everything else must match the model.
		d2, err := Open("/img/layer0.vhd", fsys.opts())
		if err != nil {
			t.Fatalf("cut after %d writes: reopen: %v", cut, err)
		}
		if probs := d2.Check(); len(probs) > 0 {
			t.Fatalf("cut after %d writes: check: %v", cut, probs)
		}
		got := make([]byte, d2.Size())
		if _, err := d2.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		var skipA, skipB int64
		if crashedAt >= 0 {
			o := ops[crashedAt]
			skipA, skipB = o.off&^511, (o.off+int64(len(o.p))+511)&^511
		}
		for i := range got {
			if (int64(i) < skipA || int64(i) >= skipB) && got[i] != model[i] {
				t.Fatalf("cut after %d writes: byte %d differs from the writes completed before the cut", cut, i)
			}
		}
		d2.Close()
		if crashedAt < 0 {
			t.Logf("all %d writes done after %d file writes; every cut point checked", len(ops), cut)
			break
		}
	}
}

// TestWriterLocks: a second writer of an image, or a writer of the parent of
// an image open for writing, is refused; readers are not.
func TestWriterLocks(t *testing.T) {
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	w, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(child, nil); !errors.Is(err, ErrLocked) {
		t.Errorf("second writer of the child: %v, want ErrLocked", err)
	}
	if _, err := Open(base, nil); !errors.Is(err, ErrLocked) {
		t.Errorf("writer of the parent while the child is written: %v, want ErrLocked", err)
	}
	for _, p := range []string{child, base} {
		r, err := Open(p, &Options{ReadOnly: true})
		if err != nil {
			t.Errorf("reader of %s: %v", p, err)
		} else {
			r.Close()
		}
	}
	w.Close()
	w, err = Open(base, nil)
	if err != nil {
		t.Fatalf("writer of the parent once the child is closed: %v", err)
	}
	if _, err := Open(child, nil); !errors.Is(err, ErrLocked) {
		t.Errorf("writer of the child while its parent is written: %v, want ErrLocked", err)
	}
	w.Close()
}

// TestNewBlockBitmapPadding: a new block's bitmap area past the bits it uses
// holds zeros, not what the file had there (the old footer).
func TestNewBlockBitmapPadding(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.vhd")
	if err := Create(path, CreateOptions{Type: TypeDynamic, Size: 4 << 20, BlockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	// Move the footer to 0xE00 (as a producer with padding before it might
	// have it), where a new block's bitmap, 4 KiB-aligning its data, lands
	// right on top of it.
	b, _ := os.ReadFile(path)
	footer := append([]byte(nil), b[len(b)-512:]...)
	b = append(append(b[:len(b)-512], make([]byte, 0xE00-(len(b)-512))...), footer...)
	os.WriteFile(path, b, 0o644)
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 4; i++ {
		if _, err := d.WriteAt([]byte{1, 2, 3}, i*(64<<10)+700); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	b, _ = os.ReadFile(path)
	if start := int64(binary.BigEndian.Uint32(b[1536:])) * 512; start != 0xE00 {
		t.Fatalf("block 0 at 0x%x; the test expects it on the old footer at 0xE00", start)
	}
	for i := range 4 {
		start := int64(binary.BigEndian.Uint32(b[1536+4*i:])) * 512
		used := (64 << 10) / 512 / 8 // 16 bytes of bits
		if pad := b[start+int64(used) : start+512]; !bytes.Equal(pad, make([]byte, len(pad))) {
			t.Errorf("block %d: bitmap padding not zero: % x", i, pad[:16])
		}
	}
}
