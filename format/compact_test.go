package format

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestCompact compacts dynamic, differencing and fixed images: the content
// stays the same (model and qemu-img), the unique id and parent locators are
// kept (the child still finds its parent by itself), zero blocks go, the
// file shrinks, and an image in use is refused.
func TestCompact(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 61))
	dir := t.TempDir()
	const size = 16 << 20
	const bs = 1 << 20
	rnd := func(n int) []byte { b := make([]byte, n); fillRandom(rng, b); return b }

	// Dynamic: data in blocks 0, 2 and 9 (partly); block 4 written then
	// zeroed; blocks 5-7 written then discarded (their space punched but not
	// reused).
	dyn := filepath.Join(dir, "dyn.vhd")
	if err := Create(dyn, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	d, err := Open(dyn, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		off int64
		p   []byte
	}{{0, rnd(bs)}, {2 * bs, rnd(bs)}, {9*bs + 4096, rnd(5000)}, {4 * bs, rnd(bs)}, {4 * bs, make([]byte, bs)}, {5 * bs, rnd(3 * bs)}} {
		d.WriteAt(w.p, w.off)
		copy(model[w.off:], w.p)
	}
	d.Discard(5*bs, 3*bs)
	clear(model[5*bs : 8*bs])
	d.Close()
	uid := footerUID(t, dyn)
	fiBefore, _ := os.Stat(dyn)
	res, err := Compact(dyn, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlocksFreed != 1 {
		t.Errorf("dynamic: %d blocks freed, want 1 (block 4)", res.BlocksFreed)
	}
	fiAfter, _ := os.Stat(dyn)
	if fiAfter.Size() >= fiBefore.Size()-4*bs || res.FileAfter != fiAfter.Size() {
		t.Errorf("dynamic: file %d bytes before, %d after (result says %d); want at least 4 blocks less", fiBefore.Size(), fiAfter.Size(), res.FileAfter)
	}
	if got := readImage(t, dyn); !bytes.Equal(got, model) {
		t.Error("dynamic: content changed")
	}
	if got := qemuRaw(t, dyn); !bytes.Equal(got, model) {
		t.Error("dynamic: qemu-img reads something else after compacting")
	}
	if footerUID(t, dyn) != uid {
		t.Error("dynamic: the unique id changed")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, ".*compact*"))
	if len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	// Differencing: zeros over the parent's data stay; zeros where the
	// parent has nothing go.
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "sub", "child.vhd")
	os.Mkdir(filepath.Dir(child), 0o755)
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	model = make([]byte, size)
	pdata := rnd(bs)
	writeImage(t, base, pdata, bs)
	copy(model[bs:], pdata)
	if err := Create(child, CreateOptions{Parent: base, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	d, err = Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		off int64
		p   []byte
	}{{bs, rnd(bs)}, {bs, make([]byte, bs)}, {3 * bs, rnd(bs)}, {3 * bs, make([]byte, bs)}, {6 * bs, rnd(100)}} {
		d.WriteAt(w.p, w.off)
		copy(model[w.off:], w.p)
	}
	d.Close()
	uid = footerUID(t, child)
	res, err = Compact(child, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlocksFreed != 1 {
		t.Errorf("differencing: %d blocks freed, want 1 (block 3)", res.BlocksFreed)
	}
	if got := readImage(t, child); !bytes.Equal(got, model) { // finds its parent through the kept locators
		t.Error("differencing: content changed")
	}
	if footerUID(t, child) != uid {
		t.Error("differencing: the unique id changed")
	}

	// Fixed: zero pages are punched in place.
	fixed := filepath.Join(dir, "fixed.vhd")
	if err := Create(fixed, CreateOptions{Type: TypeFixed, Size: size}); err != nil {
		t.Fatal(err)
	}
	model = make([]byte, size)
	data := rnd(size)
	for i := 0; i < size; i += 64 << 10 { // every other 32 KiB zero
		clear(data[i : i+32<<10])
	}
	f, _ := os.OpenFile(fixed, os.O_RDWR, 0)
	f.WriteAt(data, 0) // written non-sparse
	f.Close()
	copy(model, data)
	res, err = Compact(fixed, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Before-res.After < size/2-(64<<10) {
		t.Errorf("fixed: host bytes %d before, %d after; want about half given back", res.Before, res.After)
	}
	if got := readImage(t, fixed); !bytes.Equal(got, model) {
		t.Error("fixed: content changed")
	}

	// In use: refused, left alone.
	d, err = Open(dyn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := Compact(dyn, CompactOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("compact of an image in use: %v, want ErrLocked", err)
	}
}

// footerUID returns the unique id bytes of the footer at the end of path.
func footerUID(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[len(b)-512+0x44 : len(b)-512+0x54])
}
