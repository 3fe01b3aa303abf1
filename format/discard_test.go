package format

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// allocatedOnHost returns the bytes the host filesystem stores for path.
func allocatedOnHost(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// qemuRaw converts a VHD to raw with qemu-img, an independent reader.
func qemuRaw(t *testing.T, path string) []byte {
	t.Helper()
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img not installed")
	out := filepath.Join(t.TempDir(), "q.raw")
	if b, err := exec.Command("qemu-img", "convert", "--image-opts", "driver=vpc,force_size_calc=current_size,file.filename="+path, "-O", "raw", out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", path, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDiscardRealFiles discards ranges of real dynamic, fixed and
// differencing images: the ranges read as zeros (by our reader and by
// qemu-img), whole blocks of a dynamic disk are unallocated in the BAT (read
// from the file here), and the image file gives the space back.
func TestDiscardRealFiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 41))
	dir := t.TempDir()
	const size = 16 << 20
	const bs = 2 << 20
	data := make([]byte, size)
	fillRandom(rng, data)

	for _, typ := range []int{TypeDynamic, TypeFixed} {
		path := filepath.Join(dir, map[int]string{TypeDynamic: "dyn.vhd", TypeFixed: "fixed.vhd"}[typ])
		if err := Create(path, CreateOptions{Type: typ, Size: size, BlockSize: bs}); err != nil {
			t.Fatal(err)
		}
		d, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		d.Sync()
		before, allocBefore := allocatedOnHost(t, path), d.AllocatedBytes()
		model := append([]byte(nil), data...)
		// Blocks 1 and 2 whole, most of block 4 (unaligned), a sub-sector
		// piece, and block 6 in two halves.
		for _, r := range [][2]int64{{bs, 2 * bs}, {4*bs + 1000, bs - 5000}, {7*bs + 100, 50}, {6 * bs, bs / 2}, {6*bs + bs/2, bs / 2}} {
			if err := d.Discard(r[0], r[1]); err != nil {
				t.Fatalf("%s: Discard(%d, %d): %v", path, r[0], r[1], err)
			}
			clear(model[r[0] : r[0]+r[1]])
		}
		checkAll(t, d, model, path)
		allocAfter := d.AllocatedBytes()
		d.Close()
		after := allocatedOnHost(t, path)
		// 3 whole blocks' worth (blocks 1, 2, 6) at least; the fixed disk
		// also gives back the pages inside block 4.
		if before-after < 3*bs {
			t.Errorf("%s: host file stores %d bytes before the discards, %d after; want at least %d fewer", path, before, after, 3*bs)
		}
		if typ == TypeDynamic {
			if allocBefore-allocAfter != 3*bs {
				t.Errorf("%s: AllocatedBytes %d before, %d after; want %d fewer", path, allocBefore, allocAfter, 3*bs)
			}
			raw, _ := os.ReadFile(path)
			h := int64(binary.BigEndian.Uint64(raw[0x10:]))                                    // footer DataOffset
			bat := int64(binary.BigEndian.Uint64(raw[h+0x10:]))                                // header TableOffset
			for blk, want := range []bool{true, false, false, true, true, true, false, true} { // allocated?
				e := binary.BigEndian.Uint32(raw[bat+4*int64(blk):])
				if (e != 0xFFFFFFFF) != want {
					t.Errorf("%s: BAT entry %d is 0x%08x, want allocated=%v", path, blk, e, want)
				}
			}
		}
		if got := qemuRaw(t, path); !bytes.Equal(got, model) {
			t.Errorf("%s: qemu-img reads something else than the model after the discards", path)
		}
		d, err = Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if probs := d.Check(); len(probs) > 0 {
			t.Errorf("%s: check: %v", path, probs)
		}
		d.Close()
	}

	// Differencing: over a parent with data, the discarded range reads
	// zeros (stored in the child); where the parent has nothing, the child's
	// blocks go back to unallocated.
	base := filepath.Join(dir, "base.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(data[:size/2], 0); err != nil { // parent holds the first half
		t.Fatal(err)
	}
	d.Close()
	child := filepath.Join(dir, "child.vhd")
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	d, err = Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	copy(model, data[:size/2])
	if _, err := d.WriteAt(data[size/2:], size/2); err != nil { // child holds the second half
		t.Fatal(err)
	}
	copy(model[size/2:], data[size/2:])
	for _, r := range [][2]int64{{bs + 512, bs}, {5 * bs, 2 * bs}, {7*bs + 3, 700}} {
		if err := d.Discard(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
		clear(model[r[0] : r[0]+r[1]])
	}
	checkAll(t, d, model, child)
	kept := d.AllocatedBytes()
	d.Close()
	d, err = Open(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if probs := d.Check(); len(probs) > 0 {
		t.Errorf("check: %v", probs)
	}
	// Blocks 5 and 6 are gone from the child (the parent has nothing there).
	for blk := int64(5); blk <= 6; blk++ {
		if st, _ := d.layers[0].(*vhd.Layer).Extent(blk*bs, 1); st != lay.Parent {
			t.Errorf("child block %d: %v, want unallocated", blk, st)
		}
	}
	if again := d.AllocatedBytes(); again != kept || kept != size-2*bs {
		t.Errorf("AllocatedBytes %d kept current, %d counted again; want %d", kept, again, size-2*bs)
	}
}
