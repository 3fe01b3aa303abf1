package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// relinkCase is a child whose parent was moved: the chain before the move
// (for the model), and the files after it.
type relinkCase struct {
	child, parent string // paths after the move
	model         []byte
	fsys          memFS
}

// movedChain builds a child (with W2ru, W2ku and MacX locators naming the
// parent's old place, /img/layer1.vhd) over a dynamic parent, then moves the
// child to childDir and the parent to parentPath.
func movedChain(rng *rand.Rand, childDir, parentPath string) relinkCase {
	const size = 1<<20 + 512
	chain := []*tLayer{randomLayer(rng, 4, size, 64<<10, 1), randomLayer(rng, 3, size, 32<<10, 2)}
	chain[0].locators = []tLoc{
		{"W2ku", utf16le(`\img\layer1.vhd`)},
		{"MacX", []byte("file:///img/layer1.vhd")},
	}
	old := chainFS(chain)
	c := relinkCase{child: childDir + "/layer0.vhd", parent: parentPath, model: flat(chain), fsys: memFS{}}
	c.fsys[c.child] = newMemFile(c.child, old["/img/layer0.vhd"].bytes())
	c.fsys[c.parent] = newMemFile(c.parent, old["/img/layer1.vhd"].bytes())
	return c
}

// headerFieldsKept checks that relinking changed nothing in the child but
// the header's checksum, parent name and locator entries, locator data, and
// (when locators moved) the footer's place.
func headerFieldsKept(t *testing.T, before, after []byte) {
	t.Helper()
	if !bytes.Equal(before[:512], after[:512]) {
		t.Error("the footer copy at 0 changed")
	}
	if !bytes.Equal(before[len(before)-512:], after[len(after)-512:]) {
		t.Error("the footer changed")
	}
	hb, ha := before[512:1536], after[512:1536]
	for _, r := range [][2]int{{0, 0x24}, {0x28, 0x40}, {0x300, 0x400}} {
		if !bytes.Equal(hb[r[0]:r[1]], ha[r[0]:r[1]]) {
			t.Errorf("header bytes 0x%x-0x%x changed", r[0], r[1])
		}
	}
	// The BAT and every block are where they were.
	to := int(binary.BigEndian.Uint64(hb[0x10:]))
	n := int(binary.BigEndian.Uint32(hb[0x1C:]))
	if !bytes.Equal(before[to:to+4*n], after[to:to+4*n]) {
		t.Error("the BAT changed")
	}
}

// TestRelink: a renamed parent beside the child (locators rewritten in place)
// and a parent moved to a path too long for the reserved space (relocated);
// the chain opens and reads the model; the footer and the other header
// fields are unchanged; a wrong parent is refused.
func TestRelink(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 61))
	long := "/img/" + strings.Repeat("a-long-directory-name-", 14)
	for _, c := range []struct {
		name, childDir, parent string
		relocated              []string
	}{
		{"renamed", "/img", "/img/renamed-parent.vhd", nil},
		{"moved-far", long, long + "/p.vhd", []string{"W2ku"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := movedChain(rng, c.childDir, c.parent)
			if _, err := Open(rc.child, rc.fsys.opts()); !errors.Is(err, ErrParentNotFound) {
				t.Fatalf("before relinking: %v, want ErrParentNotFound", err)
			}
			before := rc.fsys[rc.child].bytes()
			res, err := Relink(rc.child, rc.parent, rc.fsys.opts())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Relocated, c.relocated) || res.HeaderName != "p.vhd" && res.HeaderName != "renamed-parent.vhd" {
				t.Errorf("result %+v, want relocated %v", res, c.relocated)
			}
			after := rc.fsys[rc.child].bytes()
			headerFieldsKept(t, before, after)
			got, d := readFlat(t, rc.fsys, rc.child)
			defer d.Close()
			if !bytes.Equal(got, rc.model) {
				t.Fatalf("relinked chain differs from the model at byte %d", firstDiff(got, rc.model))
			}
			if probs := d.Check(); len(probs) > 0 {
				t.Errorf("check: %v", probs)
			}
			// Each locator alone leads to the parent.
			for _, via := range d.Layers()[0].Locators {
				if !strings.HasSuffix(strings.ReplaceAll(via.Path, `\`, "/"), filepath.Base(c.parent)) {
					t.Errorf("locator %s names %q", via.Code, via.Path)
				}
			}
			if d.Layers()[1].FoundVia != "W2ru" {
				t.Errorf("parent found via %s, want W2ru", d.Layers()[1].FoundVia)
			}
		})
	}
	rc := movedChain(rng, "/img", "/img/p.vhd")
	other := randomLayer(rng, 3, 1<<20+512, 32<<10, 9)
	rc.fsys["/img/other.vhd"] = newMemFile("/img/other.vhd", other.image())
	before := rc.fsys[rc.child].bytes()
	if _, err := Relink(rc.child, "/img/other.vhd", rc.fsys.opts()); !errors.Is(err, ErrParentMismatch) {
		t.Errorf("relink to another image: %v, want ErrParentMismatch", err)
	}
	if _, err := Relink(rc.child, rc.child, rc.fsys.opts()); err == nil {
		t.Error("relink to itself accepted")
	}
	if !bytes.Equal(before, rc.fsys[rc.child].bytes()) {
		t.Error("a refused relink changed the child")
	}
}

// TestRelinkCrashCuts relinks (in place and relocating), recording every
// write and sync; for a cut after each, the child must open (its parent
// found or, before the header write, reported missing), check clean, and
// once relinked read the model.
func TestRelinkCrashCuts(t *testing.T) {
	rng := rand.New(rand.NewPCG(62, 62))
	long := "/img/" + strings.Repeat("x-quite-long-directory-name-", 12)
	for _, c := range [][2]string{{"/img", "/img/renamed.vhd"}, {long, long + "/p.vhd"}} {
		rc := movedChain(rng, c[0], c[1])
		base := map[string][]byte{}
		for p, f := range rc.fsys {
			base[p] = f.bytes()
		}
		var log []fileOp
		o := &Options{OpenFile: func(path string, write bool) (File, error) {
			f, ok := rc.fsys[path]
			if !ok {
				return nil, os.ErrNotExist
			}
			return opFile{f, path, &log}, nil
		}}
		if _, err := Relink(rc.child, rc.parent, o); err != nil {
			t.Fatal(err)
		}
		linked := false
		for k := 0; k <= len(log); k++ {
			cut := replay(base, log, k)
			d, err := Open(rc.child, &Options{ReadOnly: true, AllowMissingParent: true, OpenFile: cut.open})
			if err != nil {
				t.Fatalf("%s: cut after %d of %d operations: %v", c[1], k, len(log), err)
			}
			if probs := d.Check(); len(probs) > 0 {
				t.Fatalf("%s: cut after %d operations: check: %v", c[1], k, probs)
			}
			if d.MissingParent() == nil {
				linked = true
				got := make([]byte, d.Size())
				if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, rc.model) {
					t.Fatalf("%s: cut after %d operations: the chain reads differently (%v)", c[1], k, err)
				}
			} else if linked {
				t.Fatalf("%s: cut after %d operations: the parent is lost again", c[1], k)
			}
			d.Close()
		}
		if !linked {
			t.Fatalf("%s: never relinked", c[1])
		}
	}
}

// TestRelinkAddsLocators: a child that names its parent only by W2ru and the
// header name gets a W2ku locator too, in new space at the end of the file.
func TestRelinkAddsLocators(t *testing.T) {
	rng := rand.New(rand.NewPCG(63, 63))
	const size = 1 << 20
	chain := []*tLayer{randomLayer(rng, 4, size, 64<<10, 1), randomLayer(rng, 3, size, 64<<10, 2)}
	old := chainFS(chain)
	fsys := memFS{"/img/layer0.vhd": old["/img/layer0.vhd"], "/img/moved.vhd": old["/img/layer1.vhd"]}
	fsys["/img/moved.vhd"].name = "/img/moved.vhd"
	before := fsys["/img/layer0.vhd"].bytes()
	res, err := Relink("/img/layer0.vhd", "/img/moved.vhd", fsys.opts())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Added, []string{"W2ku"}) || !slices.Equal(res.InPlace, []string{"W2ru"}) {
		t.Errorf("result %+v, want W2ru rewritten and W2ku added", res)
	}
	headerFieldsKept(t, before, fsys["/img/layer0.vhd"].bytes())
	got, d := readFlat(t, fsys, "/img/layer0.vhd")
	defer d.Close()
	if !bytes.Equal(got, flat(chain)) {
		t.Fatal("relinked chain differs from the model")
	}
	if probs := d.Check(); len(probs) > 0 {
		t.Errorf("check: %v", probs)
	}
	var codes []string
	for _, l := range d.Layers()[0].Locators {
		codes = append(codes, l.Code+"="+l.Path)
	}
	if !slices.Contains(codes, `W2ku=\img\moved.vhd`) || !slices.Contains(codes, `W2ru=.\moved.vhd`) {
		t.Errorf("locators %v", codes)
	}
	// A block written after the relink goes past the new locator space.
	w, err := Open("/img/layer0.vhd", fsys.opts())
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt(bytes.Repeat([]byte{9}, 4096), size-4096)
	w.Close()
	_, d2 := readFlat(t, fsys, "/img/layer0.vhd")
	defer d2.Close()
	if probs := d2.Check(); len(probs) > 0 {
		t.Errorf("check after a write: %v", probs)
	}
}

// TestRelinkLocked: a child open for writing (a mount) is not relinked.
func TestRelinkLocked(t *testing.T) {
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	w, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before, _ := os.ReadFile(child)
	if _, err := Relink(child, base, nil); !errors.Is(err, ErrLocked) {
		t.Errorf("relink of a child open for writing: %v, want ErrLocked", err)
	}
	if after, _ := os.ReadFile(child); !bytes.Equal(before, after) {
		t.Error("a refused relink changed the child")
	}
}
