package format

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// readImage reads the whole virtual disk of path.
func readImage(t *testing.T, path string) []byte {
	t.Helper()
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if probs := d.Check(); len(probs) > 0 {
		t.Errorf("%s: check: %v", path, probs)
	}
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeImage(t *testing.T, path string, p []byte, off int64) {
	t.Helper()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

// resized grows or shrinks model as a resize to size does.
func resized(model []byte, size int64) []byte {
	if int64(len(model)) >= size {
		return model[:size]
	}
	return append(model, make([]byte, size-int64(len(model)))...)
}

// TestResize grows and shrinks dynamic, fixed and differencing images
// (BAT moved, then grown in place; a partial last block), comparing with a
// model and with qemu-img after each step, and writing into the new space.
func TestResize(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 51))
	dir := t.TempDir()
	for _, typ := range []int{TypeDynamic, TypeFixed} {
		path := filepath.Join(dir, map[int]string{TypeDynamic: "d.vhd", TypeFixed: "f.vhd"}[typ])
		const size0 = 10<<20 + 3*512 // the last 2 MiB block is partial
		if err := Create(path, CreateOptions{Type: typ, Size: size0}); err != nil {
			t.Fatal(err)
		}
		model := make([]byte, size0)
		fillRandom(rng, model[8<<20:])
		writeImage(t, path, model[8<<20:], 8<<20)
		steps := []struct {
			size   int64
			shrink bool
			fail   bool
		}{
			{40 << 20, false, false}, // grow (dynamic: the BAT moves)
			{20 << 20, false, true},  // smaller without Shrink
			{20 << 20, true, false},  // shrink: nothing past 20 MiB
			{9 << 20, true, true},    // data past 9 MiB
			{30<<20 + 512, false, false},
		}
		for i, st := range steps {
			_, err := Resize(path, st.size, ResizeOptions{Shrink: st.shrink})
			if st.fail {
				if err == nil {
					t.Fatalf("%s step %d: resize to %d succeeded; want a refusal", path, i, st.size)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s step %d: resize to %d: %v", path, i, st.size, err)
			}
			model = resized(model, st.size)
			if got := readImage(t, path); !bytes.Equal(got, model) {
				t.Fatalf("%s step %d: content after the resize differs from the model", path, i)
			}
			if got := qemuRaw(t, path); !bytes.Equal(got, model) {
				t.Fatalf("%s step %d: qemu-img reads something else", path, i)
			}
			fi, _ := os.Stat(path)
			if typ == TypeFixed && fi.Size() != st.size+512 {
				t.Errorf("%s step %d: file is %d bytes, want %d", path, i, fi.Size(), st.size+512)
			}
			// Write across the old end and at the new end.
			p := make([]byte, 3<<20)
			fillRandom(rng, p)
			off := st.size - int64(len(p))
			writeImage(t, path, p, off)
			copy(model[off:], p)
			if got := readImage(t, path); !bytes.Equal(got, model) {
				t.Fatalf("%s step %d: content after writing into the new space differs", path, i)
			}
			// Clear it again so the next shrink has room.
			writeImage(t, path, make([]byte, len(p)), off)
			clear(model[off:])
			if typ == TypeDynamic {
				d, _ := Open(path, nil)
				d.Discard(off, int64(len(p)))
				d.Close()
			}
		}
	}

	// A differencing disk grows past its parent: the tail reads zeros.
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	pb := bytes.Repeat([]byte{9}, 4<<20)
	writeImage(t, base, pb, 0)
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	if _, err := Resize(child, 16<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	want := resized(append([]byte(nil), pb...), 16<<20)
	if got := readImage(t, child); !bytes.Equal(got, want) {
		t.Error("the grown child does not read as its parent then zeros")
	}
	writeImage(t, child, []byte{1, 2, 3}, 12<<20)
	want[12<<20], want[12<<20+1], want[12<<20+2] = 1, 2, 3
	if got := readImage(t, child); !bytes.Equal(got, want) {
		t.Error("a write past the parent's end reads back wrong")
	}

	// An image in use is refused.
	d, err := Open(base, &Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := Resize(base, 8<<20, ResizeOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("resize of an image open for writing: %v, want ErrLocked", err)
	}
}

// TestResizeCrash cuts a resize after each of its file writes: the image
// then opens, shows either the old or the new size, and reads as before
// (zeros past the old end), except that a fixed disk cut between its two
// footer writes shows the old footer in the 512 bytes at the old end (the
// cut between a fixed shrink's footer write and truncation is not
// replayed: the memory file's Truncate is not cut), and
// a dynamic one cut between its two footer writes has a stale footer copy
// at offset 0 (which Check reports).
func TestResizeCrash(t *testing.T) {
	rng := rand.New(rand.NewPCG(52, 52))
	for _, c := range []struct {
		name         string
		typ          int
		size0, size1 int64
		tail         bool // data in the last 1 KiB too
	}{
		{"dynamic grow, BAT moved", TypeDynamic, 5<<20 + 1024, 13 << 20, true},
		{"dynamic shrink", TypeDynamic, 13 << 20, 7<<20 + 512, false},
		{"fixed grow", TypeFixed, 3<<20 + 512, 5 << 20, true},
		{"fixed shrink", TypeFixed, 5 << 20, 3<<20 + 512, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "i.vhd")
			if err := Create(path, CreateOptions{Type: c.typ, Size: c.size0, BlockSize: 1 << 20}); err != nil {
				t.Fatal(err)
			}
			model := make([]byte, c.size0)
			fillRandom(rng, model[:3<<20])
			writeImage(t, path, model[:3<<20], 0)
			if c.tail {
				fillRandom(rng, model[c.size0-1024:])
				writeImage(t, path, model[c.size0-1024:], c.size0-1024)
			}
			img, _ := os.ReadFile(path)
			for cut := 0; ; cut++ {
				f := newMemFile(path, append([]byte(nil), img...))
				top := &crashFile{f, cut}
				o := &Options{OpenFile: func(string, bool) (File, error) { return top, nil }}
				_, rerr := Resize(path, c.size1, ResizeOptions{Shrink: true, Open: o})
				if rerr != nil && !errors.Is(rerr, errCrashed) {
					t.Fatalf("cut %d: %v", cut, rerr)
				}
				fsys := memFS{path: newMemFile(path, f.bytes())}
				d, err := Open(path, fsys.opts())
				if err != nil {
					t.Fatalf("cut %d: reopen: %v", cut, err)
				}
				if d.Size() != c.size0 && d.Size() != c.size1 {
					t.Fatalf("cut %d: size %d, want %d or %d", cut, d.Size(), c.size0, c.size1)
				}
				for _, p := range d.Check() {
					if p.Msg != "the footer copy at offset 0 differs from the footer" || rerr == nil {
						t.Fatalf("cut %d: check: %v", cut, p)
					}
				}
				got := make([]byte, d.Size())
				if _, err := d.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				d.Close()
				want := resized(append([]byte(nil), model...), d.Size())
				if c.typ == TypeFixed && rerr != nil && d.Size() > c.size0 {
					copy(got[c.size0:c.size0+512], want[c.size0:]) // the old footer, not yet zeroed
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("cut %d: content differs from the model", cut)
				}
				if rerr == nil {
					t.Logf("resize done after %d file writes; every cut checked", cut)
					break
				}
			}
		})
	}
}
