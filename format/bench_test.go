package format

import (
	"math/rand/v2"
	"os"
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

// BenchmarkRandWrite4K writes 4 KiB at random 4 KiB-aligned offsets of a
// differencing disk (1 GiB, 2 MiB blocks) over an empty dynamic parent, with
// every block of the child allocated first: each write sets bitmap bits of
// a block that is partly present, the steady state of random writes into
// new blocks (issue #11). "file" writes real files (page cache); "mem"
// writes in-memory files, so ns/op is this package's own CPU cost.
func BenchmarkRandWrite4K(b *testing.B) {
	const size = 1 << 30
	dir := b.TempDir()
	base, child := filepath.Join(dir, "p.vhd"), filepath.Join(dir, "c.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: size}); err != nil {
		b.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		b.Fatal(err)
	}
	// The in-memory copies are taken before "file" writes the files.
	imgs := map[string][]byte{}
	for _, p := range []string{base, child} {
		img, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		imgs[p] = img
	}
	run := func(b *testing.B, d *Disk) {
		rng := rand.New(rand.NewPCG(3, 4))
		buf := make([]byte, 4096)
		fillRandom(rng, buf)
		for off := int64(0); off < size; off += 2 << 20 {
			if _, err := d.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.WriteAt(buf, int64(rng.IntN(size/4096))*4096); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("file", func(b *testing.B) {
		d, err := Open(child, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		run(b, d)
	})
	b.Run("mem", func(b *testing.B) {
		fsys := memFS{}
		for p, img := range imgs {
			fsys[p] = newMemFile(p, append([]byte(nil), img...))
		}
		d, err := Open(child, fsys.opts())
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		run(b, d)
	})
}
