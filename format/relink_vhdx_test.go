package format

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// writeModel writes random runs into the disk at path (opened read-write
// alone or as a chain) and into model.
func writeModel(t *testing.T, path string, model []byte, rng *rand.Rand, n int) {
	t.Helper()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		ln := 1 + rng.IntN(300000)
		off := rng.Int64N(int64(len(model) - ln))
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

func readAll(t *testing.T, path string, size int64) []byte {
	t.Helper()
	ro := &Options{ReadOnly: true}
	d, err := Open(path, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, size)
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRelinkVHDX moves the parent of an AVHDX into another directory,
// relinks the child there, and reads the chain as the model written in the
// test; a VHDX that is not the parent, and a VHD, are refused without a
// change to the child.
func TestRelinkVHDX(t *testing.T) {
	for _, lss := range []int{512, 4096} {
		dir := t.TempDir()
		rng := rand.New(rand.NewPCG(uint64(lss), 7))
		const size = 24 << 20
		parent := filepath.Join(dir, "base.vhdx")
		child := filepath.Join(dir, "snap.avhdx")
		if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20, SectorSize: lss}); err != nil {
			t.Fatal(err)
		}
		model := make([]byte, size)
		writeModel(t, parent, model, rng, 20)
		if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
			t.Fatal(err)
		}
		writeModel(t, child, model, rng, 20)

		other := filepath.Join(dir, "other.vhdx")
		if err := vhdx.Create(other, vhdx.CreateOptions{Size: size, SectorSize: lss}); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(child)
		if _, err := Relink(child, other, nil); !errors.Is(err, ErrParentMismatch) {
			t.Fatalf("relink to a VHDX that is not the parent: %v", err)
		}
		vhdFile := filepath.Join(dir, "x.vhd")
		if err := Create(vhdFile, CreateOptions{Size: size, Type: vhd.TypeDynamic}); err != nil {
			t.Fatal(err)
		}
		if _, err := Relink(child, vhdFile, nil); !errors.Is(err, ErrParentMismatch) {
			t.Fatalf("relink to a VHD: %v", err)
		}
		if after, _ := os.ReadFile(child); !bytes.Equal(before, after) {
			t.Fatal("a refused relink changed the child")
		}

		if err := os.Mkdir(filepath.Join(dir, "moved"), 0o755); err != nil {
			t.Fatal(err)
		}
		moved := filepath.Join(dir, "moved", "base2.vhdx")
		if err := os.Rename(parent, moved); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(child, &Options{ReadOnly: true}); err == nil {
			t.Fatal("the chain opened with its parent moved away")
		}
		res, err := Relink(child, moved, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.HeaderName != `.\moved\base2.vhdx` {
			t.Errorf("relative path %q", res.HeaderName)
		}
		if got := readAll(t, child, size); !bytes.Equal(got, model) {
			t.Fatalf("lss %d: the relinked chain does not read as the model", lss)
		}
		// Back beside the child.
		if err := os.Rename(moved, parent); err != nil {
			t.Fatal(err)
		}
		if res, err = Relink(child, parent, nil); err != nil {
			t.Fatal(err)
		}
		if res.HeaderName != `.\base.vhdx` {
			t.Errorf("relative path %q", res.HeaderName)
		}
		if got := readAll(t, child, size); !bytes.Equal(got, model) {
			t.Fatalf("lss %d: the chain relinked back does not read as the model", lss)
		}
		d, err := Open(child, &Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if ps := d.Check(); len(ps) > 0 {
			t.Errorf("check after relink: %v", ps)
		}
		d.Close()
	}
}
