package format

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// benchChain makes a fully allocated dynamic disk and a chain of four
// children over it, each rewriting a 256 KiB run and a 4 KiB run of every
// block (as make bench does), and returns the base and the top.
func benchChain(b *testing.B, size int64) (string, string) {
	b.Helper()
	dir := b.TempDir()
	base := filepath.Join(dir, "c0.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: size}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2<<20)
	fillRandom(rng, buf)
	d, _ := Open(base, nil)
	for off := int64(0); off < size; off += int64(len(buf)) {
		d.WriteAt(buf, off)
	}
	d.Close()
	prev := base
	for k := 1; k <= 4; k++ {
		child := filepath.Join(dir, "c"+string(rune('0'+k))+".vhd")
		if err := Create(child, CreateOptions{Parent: prev}); err != nil {
			b.Fatal(err)
		}
		d, _ := Open(child, nil)
		for blk := int64(0); blk < size/(2<<20); blk++ {
			d.WriteAt(buf[:256<<10], blk*(2<<20)+int64(k-1)*(512<<10)+128<<10)
			d.WriteAt(buf[:4096], blk*(2<<20)+int64(rng.IntN(500))*4096)
		}
		d.Close()
		prev = child
	}
	return base, prev
}

// BenchmarkSeqRead1M reads 1 MiB requests sequentially from the page cache,
// from one dynamic layer and through the 5-file chain.
func BenchmarkSeqRead1M(b *testing.B) {
	const size = 256 << 20
	base, top := benchChain(b, size)
	for _, c := range []struct{ name, path string }{{"dynamic", base}, {"chain4", top}} {
		b.Run(c.name, func(b *testing.B) {
			d, err := Open(c.path, &Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			off := int64(0)
			for b.Loop() {
				if _, err := d.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % size
			}
		})
	}
}
