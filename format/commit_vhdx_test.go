package format

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// mutateModel writes random runs, and discards some ranges, into the disk
// at path and into model.
func mutateModel(t *testing.T, path string, model []byte, rng *rand.Rand, n int) {
	t.Helper()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		ln := 1 + rng.IntN(600000)
		off := rng.Int64N(int64(len(model) - ln))
		if rng.IntN(5) == 0 {
			// Long enough to cover whole blocks: ZERO blocks in a child.
			ln = min(1+rng.IntN(3<<20), len(model)/2)
			off = rng.Int64N(int64(len(model) - ln))
			if err := d.Discard(off, int64(ln)); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+int64(ln)])
			continue
		}
		p := make([]byte, ln)
		for j := range p {
			p[j] = byte(rng.IntN(255) + 1)
		}
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkClean(t *testing.T, path string) {
	t.Helper()
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if ps := d.Check(); len(ps) > 0 {
		t.Fatalf("%s: check: %v", path, ps)
	}
	if w := d.Warnings(); len(w) > 0 {
		t.Fatalf("%s: warnings: %v", path, w)
	}
}

// TestCommitVHDX: random writes and discards into an AVHDX over a dynamic,
// fixed or differencing VHDX parent (512- and 4096-byte sectors) are
// committed; the parent alone, and the emptied child over it, read as the
// model written in the test; both check clean without warnings; the child's
// parent_linkage is the parent's new DataWriteGuid and it has no
// parent_linkage2; qemu-img reads a dynamic or fixed parent as the model and
// checks it clean.
func TestCommitVHDX(t *testing.T) {
	for _, kind := range []string{"dynamic", "fixed", "differencing"} {
		for _, lss := range []int{512, 4096} {
			t.Run(fmt.Sprint(kind, lss), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(lss), uint64(len(kind))))
				// A size that is not a whole number of blocks; 7-Zip 26
				// refuses such a size with 4096-byte sectors.
				size := int64(20<<20 + 4096*3)
				if lss == 4096 {
					size = 20 << 20
				}
				dir := t.TempDir()
				model := make([]byte, size)
				parent := filepath.Join(dir, "p.vhdx")
				switch kind {
				case "differencing":
					base := filepath.Join(dir, "base.vhdx")
					if err := vhdx.Create(base, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20, SectorSize: lss}); err != nil {
						t.Fatal(err)
					}
					mutateModel(t, base, model, rng, 15)
					if err := vhdx.Create(parent, vhdx.CreateOptions{Parent: base}); err != nil {
						t.Fatal(err)
					}
				default:
					if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: 2 << 20, SectorSize: lss, Fixed: kind == "fixed"}); err != nil {
						t.Fatal(err)
					}
				}
				mutateModel(t, parent, model, rng, 15)
				child := filepath.Join(dir, "c.avhdx")
				if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
					t.Fatal(err)
				}
				mutateModel(t, child, model, rng, 30)
				// Whole blocks discarded over a parent with data: ZERO.
				cd, err := Open(child, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := cd.Discard(4<<20, 4<<20); err != nil {
					t.Fatal(err)
				}
				cd.Close()
				clear(model[4<<20 : 8<<20])
				if zeroRuns(t, child) == 0 {
					t.Error("the child has no ZERO block: the test does not cover them")
				}
				var calls int
				res, err := Commit(child, CommitOptions{Progress: func(done, total int64) { calls++ }})
				if err != nil {
					t.Fatal(err)
				}
				if res.Bytes == 0 || calls == 0 || res.Blocks == 0 {
					t.Errorf("result %+v, %d progress calls", res, calls)
				}
				if got := readAll(t, parent, size); !bytes.Equal(got, model) {
					t.Fatal("the parent does not read as the model after the commit")
				}
				if got := readAll(t, child, size); !bytes.Equal(got, model) {
					t.Fatal("the emptied child does not read as the model")
				}
				checkClean(t, parent)
				checkClean(t, child)
				pf, _ := os.Open(parent)
				pl, err := vhdx.Open(parent, pf, vhdx.Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer pl.Close()
				cf, _ := os.Open(child)
				cl, err := vhdx.Open(child, cf, vhdx.Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				l1, l2 := cl.ParentLinkage()
				if l1 != pl.DataWriteGUID() || !l2.IsZero() {
					t.Errorf("child linkage %s / %s, parent DataWriteGuid %s", l1, l2, pl.DataWriteGUID())
				}
				if fi, _ := os.Stat(child); fi.Size() > 8<<20 {
					t.Errorf("the emptied child is %d bytes", fi.Size())
				}
				sz, err := exec.LookPath("7zz")
				testenv.Require(t, err == nil, "7zz is not installed")
				for _, img := range []string{parent, child} {
					cmd := exec.Command(sz, "e", "-tvhdx", "-so", filepath.Base(img))
					cmd.Dir = dir
					got, err := cmd.Output()
					if err != nil {
						t.Fatalf("7zz reading %s: %v", img, err)
					}
					if !bytes.Equal(got, model) {
						t.Fatalf("7-Zip does not read %s as the model", img)
					}
				}
				if kind == "differencing" || lss == 4096 {
					return // qemu 7.2 opens neither (vhdx-notes.md, known peer bugs)
				}
				qemu, err := exec.LookPath("qemu-img")
				testenv.Require(t, err == nil, "qemu-img is not installed")
				if b, err := exec.Command(qemu, "check", "-f", "vhdx", parent).CombinedOutput(); err != nil || !bytes.Contains(b, []byte("No errors were found")) {
					t.Fatalf("qemu-img check: %v: %s", err, b)
				}
				raw := filepath.Join(dir, "flat.raw")
				if b, err := exec.Command(qemu, "convert", "-f", "vhdx", "-O", "raw", parent, raw).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img convert: %v: %s", err, b)
				}
				got, err := os.ReadFile(raw)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, model) {
					t.Fatal("qemu-img does not read the parent as the model")
				}
			})
		}
	}
}

// TestCommitVHDXSiblings: another AVHDX of the parent beside it refuses the
// commit (listed, nothing written); so does a child of the child with
// --remove; --force commits and removes, and the parent reads as the model.
func TestCommitVHDXSiblings(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	dir := t.TempDir()
	const size = 4 << 20
	parent := filepath.Join(dir, "p.vhdx")
	if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	mutateModel(t, parent, model, rng, 4)
	child, sib, grand := filepath.Join(dir, "c.avhdx"), filepath.Join(dir, "s.avhdx"), filepath.Join(dir, "g.avhdx")
	for _, c := range [][2]string{{child, parent}, {sib, parent}} {
		if err := vhdx.Create(c[0], vhdx.CreateOptions{Parent: c[1]}); err != nil {
			t.Fatal(err)
		}
	}
	mutateModel(t, child, model, rng, 6)
	if err := vhdx.Create(grand, vhdx.CreateOptions{Parent: child}); err != nil {
		t.Fatal(err)
	}
	sums := func() [3][]byte {
		var out [3][]byte
		for i, p := range []string{parent, child, grand} {
			out[i], _ = os.ReadFile(p)
		}
		return out
	}
	before := sums()
	_, err := Commit(child, CommitOptions{})
	var se *SiblingError
	if !errors.As(err, &se) || len(se.Siblings) != 1 || se.Siblings[0] != sib {
		t.Fatalf("commit beside a sibling: %v", err)
	}
	os.Remove(sib)
	_, err = Commit(child, CommitOptions{Remove: true})
	var ce *ChildrenError
	if !errors.As(err, &ce) || len(ce.Children) != 1 || ce.Children[0] != grand {
		t.Fatalf("commit --remove of a child with a child: %v", err)
	}
	if after := sums(); !bytes.Equal(after[0], before[0]) || !bytes.Equal(after[1], before[1]) {
		t.Fatal("a refused commit changed a file")
	}
	res, err := Commit(child, CommitOptions{Remove: true, Force: true})
	if err != nil || !res.Removed {
		t.Fatalf("forced commit --remove: %+v %v", res, err)
	}
	if _, err := os.Stat(child); !os.IsNotExist(err) {
		t.Fatalf("the child is still there: %v", err)
	}
	if got := readAll(t, parent, size); !bytes.Equal(got, model) {
		t.Fatal("the parent does not read as the model")
	}
	checkClean(t, parent)
}

// zeroRuns counts the runs of the VHDX file at path that read zeros
// without falling through (ZERO, UNMAPPED, UNDEFINED blocks).
func zeroRuns(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := vhdx.Open(path, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer l.Close()
	runs, err := l.Map(nil, 0, l.Size())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range runs {
		if r.State == lay.Zero {
			n++
		}
	}
	return n
}
