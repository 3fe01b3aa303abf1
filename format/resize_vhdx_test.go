package format

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// sevenZipVHDX returns 7-Zip's view of the VHDX at path (a child read
// through its parent).
func sevenZipVHDX(t *testing.T, path string) []byte {
	t.Helper()
	_, err := exec.LookPath("7zz")
	testenv.Require(t, err == nil, "7zz is not installed (7zip)")
	cmd := exec.Command("7zz", "e", "-tvhdx", "-so", filepath.Base(path))
	cmd.Dir = filepath.Dir(path)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("7zz %s: %v: %s", path, err, errb.String())
	}
	return b
}

// qemuAgrees checks path clean with qemu-img check, and compares it with
// the model (zeros past it) with qemu-img compare; a disk larger than
// 1 GiB (qemu reads every block of it, even those not present) is compared
// over its first bytes and its last 4 MiB, read with qemu-img dd, after
// qemu-img info gives its size.
func qemuAgrees(t *testing.T, path string, model []byte, size int64) {
	t.Helper()
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img is not installed (qemu-utils)")
	if b, err := exec.Command("qemu-img", "check", "-f", "vhdx", path).CombinedOutput(); err != nil || !strings.Contains(string(b), "No errors were found") {
		t.Fatalf("qemu-img check %s: %v: %s", path, err, b)
	}
	if size > 1<<30 {
		b, err := exec.Command("qemu-img", "info", "--output=json", "-f", "vhdx", path).CombinedOutput()
		if err != nil || !strings.Contains(string(b), fmt.Sprintf(`"virtual-size": %d,`, size)) {
			t.Fatalf("qemu-img info %s: %v: %s; want the virtual size %d", path, err, b, size)
		}
		const mib = 1 << 20
		head := (int64(len(model)) + 8*mib) / mib
		for _, r := range [][2]int64{{0, head}, {size/mib - 4, 4}} {
			out := filepath.Join(t.TempDir(), "dd.raw")
			if b, err := exec.Command("qemu-img", "dd", "-f", "vhdx", "-O", "raw", "bs=1M", fmt.Sprintf("skip=%d", r[0]), fmt.Sprintf("count=%d", r[0]+r[1]) /* counts from the start */, "if="+path, "of="+out).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img dd %s: %v: %s", path, err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, r[1]*mib)
			if r[0]*mib < int64(len(model)) {
				copy(want, model[r[0]*mib:])
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("qemu-img reads MiB %d-%d of %s differently from the model", r[0], r[0]+r[1], path)
			}
		}
		return
	}
	raw := filepath.Join(t.TempDir(), "model.raw")
	if err := os.WriteFile(raw, model, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("qemu-img", "compare", "-f", "vhdx", "-F", "raw", path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare %s with the model: %v: %s", path, err, b)
	}
}

// readsAsModelSparse reads the start of path and its last 4 MiB through
// format, checking the image clean; it fails unless both read as the model
// (zeros past it).
func readsAsModelSparse(t *testing.T, path string, model []byte, size int64) {
	t.Helper()
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != size {
		t.Fatalf("%s: size %d, want %d", path, d.Size(), size)
	}
	if ps := d.Check(); len(ps) > 0 {
		t.Fatalf("check %s: %v", path, ps)
	}
	n := min(int64(len(model))+8<<20, size)
	got := make([]byte, n)
	if _, err := d.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	want := resized(append([]byte(nil), model...), n)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s does not read as the model at %d", path, firstDiffAt(got, want))
	}
	tail := make([]byte, min(size, 4<<20))
	d.ReadAt(tail, size-int64(len(tail)))
	if size-int64(len(tail)) >= int64(len(model)) && !bytes.Equal(tail, make([]byte, len(tail))) {
		t.Fatalf("%s: the last %d bytes are not zeros", path, len(tail))
	}
}

func firstDiffAt(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func vhdxHeader(t *testing.T, path string) *vhdx.Header {
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
	in, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range in.Headers {
		if h.Current {
			return h.Header
		}
	}
	t.Fatal("no current header")
	return nil
}

// TestResizeVHDX grows and shrinks VHDX files Create made (fixed and
// dynamic, 1 and 32 MiB blocks, 512 and 4096-byte sectors) through
// format.Resize, with writes across the old end after each step; after
// each, the image checks clean and reads as the model here, in qemu-img
// (check and compare; 512-byte sectors) and in 7-Zip (which refuses sizes
// of an odd number of logical sectors: the sizes here are even). One step grows a
// 1 MiB-block dynamic disk to 200 GiB, past what its BAT region holds.
func TestResizeVHDX(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 71))
	for _, c := range []struct {
		name  string
		o     vhdx.CreateOptions
		steps []int64 // > 0: grow to; < 0: shrink to
	}{
		{"dynamic-1M", vhdx.CreateOptions{Size: 10<<20 + 2048, BlockSize: 1 << 20}, []int64{40<<20 + 1024, -(20 << 20), 200 << 30, -(30 << 20)}},
		{"dynamic-32M", vhdx.CreateOptions{Size: 10<<20 + 2048}, []int64{70 << 20, -(33<<20 + 1024), 100 << 20}},
		{"fixed-1M", vhdx.CreateOptions{Fixed: true, Size: 10<<20 + 2048, BlockSize: 1 << 20}, []int64{30<<20 + 1024, -(20 << 20), 24 << 20}},
		{"fixed-32M", vhdx.CreateOptions{Fixed: true, Size: 40 << 20}, []int64{-(24 << 20), 80<<20 + 4096}},
		{"dynamic-4k", vhdx.CreateOptions{Size: 12 << 20, BlockSize: 1 << 20, SectorSize: 4096}, []int64{20<<20 + 8192, -(16 << 20)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "d.vhdx")
			if err := vhdx.Create(path, c.o); err != nil {
				t.Fatal(err)
			}
			model := make([]byte, c.o.Size)
			fillRandom(rng, model[2<<20:6<<20])
			writeImage(t, path, model[2<<20:6<<20], 2<<20)
			ss := int64(max(c.o.SectorSize, 512))
			cur := c.o.Size // the disk's size; model holds its first bytes, zeros follow
			for i, st := range c.steps {
				size, shrink := st, false
				if st < 0 {
					size, shrink = -st, true
				}
				if shrink {
					// Data past the new end refuses the shrink; without
					// Shrink a smaller size is refused whatever.
					writeImage(t, path, []byte{1}, size+ss)
					if _, err := Resize(path, size, ResizeOptions{Shrink: true}); err == nil || !strings.Contains(err.Error(), "data at offset") {
						t.Fatalf("step %d: shrink over data: %v", i, err)
					}
					writeImage(t, path, []byte{0}, size+ss)
					if _, err := Resize(path, size, ResizeOptions{}); err == nil || !strings.Contains(err.Error(), "shrinking must be asked for") {
						t.Fatalf("step %d: shrink without Shrink: %v", i, err)
					}
				}
				dw := vhdxHeader(t, path).DataWriteGUID
				got, err := Resize(path, size, ResizeOptions{Shrink: shrink})
				if err != nil || got != cur {
					t.Fatalf("step %d: Resize(%d): %d, %v; want old size %d", i, size, got, err, cur)
				}
				if h := vhdxHeader(t, path); h.DataWriteGUID != dw {
					t.Errorf("step %d: DataWriteGuid changed (%s -> %s)", i, dw, h.DataWriteGUID)
				}
				small := size <= 1<<30
				if small {
					model = resized(model, size)
				} else if int64(len(model)) > size {
					model = model[:size]
				}
				// A write across the old end (what the old end's last
				// block held past it must not show).
				if size > cur && small {
					p := make([]byte, 2*ss)
					fillRandom(rng, p)
					off := cur/ss*ss - ss
					writeImage(t, path, p, off)
					copy(model[off:], p)
				}
				cur = size
				readsAsModelSparse(t, path, model, size)
				if ss == 512 {
					qemuAgrees(t, path, model, size)
				}
				if small {
					if b := sevenZipVHDX(t, path); !bytes.Equal(b, model) {
						t.Fatalf("step %d: 7-Zip reads %d bytes, not the model's %d (differs at %d)", i, len(b), size, firstDiffAt(b, model))
					}
				}
				if fi, err := os.Stat(path); err == nil && c.o.Fixed && fi.Size() < size {
					t.Errorf("step %d: a fixed file of %d bytes holds a %d-byte disk", i, fi.Size(), size)
				}
			}
		})
	}
}

// TestResizeVHDXChain: a child grows past its parent (the tail reads
// zeros, in 7-Zip too) and shrinks (a new DataWriteGuid); a parent grows
// (its DataWriteGuid kept: the child still opens and reads the same); a
// child whose parent shows data past the child's end is not grown over it;
// an image in use is refused.
func TestResizeVHDXChain(t *testing.T) {
	rng := rand.New(rand.NewPCG(72, 72))
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhdx"), filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(base, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 8<<20)
	fillRandom(rng, model)
	writeImage(t, base, model, 0)
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 3000)
	fillRandom(rng, p)
	writeImage(t, child, p, 8<<20-3512) // the child's last block
	copy(model[8<<20-3512:], p)

	// The parent grows: the child still links to it.
	dw := vhdxHeader(t, base).DataWriteGUID
	if _, err := Resize(base, 12<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	if vhdxHeader(t, base).DataWriteGUID != dw {
		t.Error("growing the parent changed its DataWriteGuid")
	}
	readsAsModel(t, child, model)

	// The child grows past the parent's old end but not past its new one,
	// over the zeros the parent grew by.
	if _, err := Resize(child, 10<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	model = resized(model, 10<<20)
	readsAsModel(t, child, model)
	if b := sevenZipVHDX(t, child); !bytes.Equal(b, model) {
		t.Fatal("7-Zip reads the grown child differently")
	}
	// And past the parent's end.
	if _, err := Resize(child, 20<<20+1024, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	model = resized(model, 20<<20+1024)
	writeImage(t, child, p, 16<<20)
	copy(model[16<<20:], p)
	readsAsModel(t, child, model)
	// The child's new blocks past its parent's end are ZERO: 7-Zip, which
	// reads NOT_PRESENT blocks from the parent even past its end ("Unexpected
	// end of data"), reads zeros there.
	if b := sevenZipVHDX(t, child); !bytes.Equal(b, model) {
		t.Fatal("7-Zip reads the child grown past its parent differently")
	}

	// The child shrinks: a new DataWriteGuid.
	writeImage(t, child, make([]byte, len(p)), 16<<20)
	writeImage(t, child, make([]byte, 4096), 8<<20-4096) // with the parent's bytes copied up around p
	cdw := vhdxHeader(t, child).DataWriteGUID
	if _, err := Resize(child, 6<<20, ResizeOptions{Shrink: true}); err != nil {
		t.Fatal(err)
	}
	if vhdxHeader(t, child).DataWriteGUID == cdw {
		t.Error("shrinking a child kept its DataWriteGuid")
	}
	model = model[:6<<20]
	readsAsModel(t, child, model)

	// The parent holds data past the child's end: growing is refused.
	_, err := Resize(child, 8<<20, ResizeOptions{})
	if err == nil || !strings.Contains(err.Error(), "its parent shows data at offset 6291456") {
		t.Fatalf("grow over the parent's data: %v", err)
	}
	readsAsModel(t, child, model)

	// In use.
	d, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := Resize(child, 7<<20, ResizeOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("resize of a child open for writing: %v, want ErrLocked", err)
	}
}
