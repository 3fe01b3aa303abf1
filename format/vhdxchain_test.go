package format

import (
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestVHDXChainWrites: a VHDX opened read-write through the chain takes
// writes, and a differencing VHDX child over it takes writes that partly
// cover sectors (the rest comes from the parent) without the parent file
// changing. The disk reads as a model kept in the test after every reopen,
// checks clean, and qemu-img reads the dynamic parent as the model of its
// own writes.
func TestVHDXChainWrites(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vhdx")
	const size = 48 << 20
	qemuDynamicVHDX(t, base, size)
	rng := rand.New(rand.NewPCG(5, 6))
	model := make([]byte, size)
	write := func(path string, n int) {
		t.Helper()
		d := openWritable(t, path)
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
	write(base, 40)
	readsAsModel(t, base, model)
	qemuReadsAs(t, base, model)
	baseSum := fileSum(t, base)
	child := filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		write(child, 30)
		readsAsModel(t, child, model)
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
