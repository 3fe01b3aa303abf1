package format

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestVHDXChainWrites: a VHDX opened read-write through the chain takes
// writes, and a differencing VHDX child over it takes writes that partly
// cover sectors (the rest comes from the parent) without the parent file
// changing. The disk reads as a model kept in the test after every reopen,
// checks clean, and qemu-img reads the dynamic parent as the model of its
// own writes.
func TestVHDXChainWrites(t *testing.T) {
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img is not installed (qemu-utils)")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhdx")
	const size = 48 << 20
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", base, "48M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	model := make([]byte, size)
	write := func(path string, n int) {
		t.Helper()
		d, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.ReadOnly() {
			t.Fatalf("%s opened read-only", path)
		}
		for range n {
			off := rng.Int64N(size - 70000)
			p := make([]byte, 1+rng.IntN(70000))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
			}
			copy(model[off:], p)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(path string) {
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
	write(base, 40)
	check(base)
	raw := filepath.Join(dir, "base.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", base, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(raw); !bytes.Equal(b, model) {
		t.Fatal("qemu-img reads the written VHDX differently")
	}
	baseSum := fileSum(t, base)
	child := filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		write(child, 30)
		check(child)
	}
	if fileSum(t, base) != baseSum {
		t.Fatal("writes into the child changed the parent file")
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
