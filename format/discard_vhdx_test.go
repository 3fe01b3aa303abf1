package format

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestDiscardVHDX: Disk.Discard on a VHDX top layer (a dynamic file qemu-img
// made, then a differencing child of it): the ranges read as zeros through
// the disk, the child's discards do not let the parent show through, the
// allocated count drops by the whole blocks discarded (the layer's free
// callback), everything checks clean, the parent file does not change,
// qemu-img reads the dynamic file as the model, and a read-only disk
// refuses.
func TestDiscardVHDX(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhdx")
	const size = 32 << 20
	qemuDynamicVHDX(t, base, size)
	rng := rand.New(rand.NewPCG(7, 8))
	model := make([]byte, size)
	fillRandom(rng, model)
	discard := func(d *Disk, off, n int64) {
		t.Helper()
		if err := d.Discard(off, n); err != nil {
			t.Fatalf("discard %d bytes at %d: %v", n, off, err)
		}
		clear(model[off : off+n])
	}

	d := openWritable(t, base)
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
	readsAsModel(t, base, model)
	qemuReadsAs(t, base, model)
	baseSum := fileSum(t, base)

	child := filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	d = openWritable(t, child)
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
	readsAsModel(t, child, model)
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
