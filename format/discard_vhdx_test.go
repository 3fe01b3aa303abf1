package format

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestDiscardVHDX: Disk.Discard on a VHDX top layer (a dynamic file qemu-img
// made, then a differencing child of it): the ranges read as zeros through
// the disk, the child's discards do not let the parent show through, the
// allocated count drops by the whole blocks discarded (the layer's free
// callback), everything checks clean, the parent file does not change,
// qemu-img reads the dynamic file as the model, and a read-only disk
// refuses.
func TestDiscardVHDX(t *testing.T) {
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img is not installed (qemu-utils)")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhdx")
	const size = 32 << 20
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", base, "32M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	model := make([]byte, size)
	fillRandom(rng, model)
	open := func(path string) *Disk {
		t.Helper()
		d, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.ReadOnly() {
			t.Fatalf("%s opened read-only", path)
		}
		return d
	}
	verify := func(path string) {
		t.Helper()
		d, err := Open(path, &Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if ps := d.Check(); len(ps) > 0 {
			t.Fatalf("check %s: %v", path, ps)
		}
		got := make([]byte, size)
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("%s does not read as the model", path)
		}
	}
	discard := func(d *Disk, off, n int64) {
		t.Helper()
		if err := d.Discard(off, n); err != nil {
			t.Fatalf("discard %d bytes at %d: %v", n, off, err)
		}
		clear(model[off : off+n])
	}

	d := open(base)
	if _, err := d.WriteAt(model, 0); err != nil {
		t.Fatal(err)
	}
	a0 := d.AllocatedBytes()
	discard(d, 3<<20, 4<<20)        // four whole blocks
	discard(d, 10<<20-700, 5000)    // parts of two blocks
	discard(d, 20<<20+4096, 64<<10) // whole pages inside a block
	if a1 := d.AllocatedBytes(); a0-a1 != 4<<20 {
		t.Fatalf("allocated bytes %d -> %d after discarding four whole blocks", a0, a1)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	verify(base)
	raw := filepath.Join(dir, "base.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", base, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(raw); err != nil || !bytes.Equal(b, model) {
		t.Fatal("qemu-img reads the discarded VHDX differently")
	}
	baseSum := fileSum(t, base)

	child := filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	d = open(child)
	p := make([]byte, 3<<20)
	fillRandom(rng, p)
	if _, err := d.WriteAt(p, 12<<20+333); err != nil {
		t.Fatal(err)
	}
	copy(model[12<<20+333:], p)
	discard(d, 0, 2<<20)             // whole blocks over parent data: must not fall through
	discard(d, 4<<20, 1<<20)         // whole block the parent discarded: nothing below
	discard(d, 12<<20+100, 1<<20+50) // parts of blocks the child holds
	discard(d, 25<<20+7, 3000)       // part of a block only the parent holds
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	verify(child)
	if fileSum(t, base) != baseSum {
		t.Fatal("discards in the child changed the parent file")
	}

	ro, err := Open(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Discard(0, 4096); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("discard on a read-only disk: %v", err)
	}
}
