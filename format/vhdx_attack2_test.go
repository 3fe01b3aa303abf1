package format

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestAttackResizeGeometry grows dynamic and differencing files of extreme
// geometry: to 64 TiB with 1 MiB blocks (the BAT moves: 512 MiB), with
// 256 MiB blocks and 4096-byte sectors, and across a chunk boundary of
// 1 MiB blocks to a size that is not a whole block. The data before the old
// end reads as before, the new range as zeros, the new end takes a write,
// and the file checks clean.
func TestAttackResizeGeometry(t *testing.T) {
	for _, c := range []struct {
		name     string
		bs       int64
		lss      int
		from, to int64
	}{
		{"1M-64T", 1 << 20, 512, 64 << 20, 64 << 40},
		{"256M-4K-64T", 256 << 20, 4096, 64 << 20, 64 << 40},
		{"1M-4K-chunk", 1 << 20, 4096, 32<<30 - 1<<20, 32<<30 + 4096},
		{"1M-chunk", 1 << 20, 512, 4<<30 - 1<<20, 8<<30 + 512},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "p.vhdx")
			if err := vhdx.Create(p, vhdx.CreateOptions{Size: c.from, BlockSize: c.bs, SectorSize: c.lss}); err != nil {
				t.Fatal(err)
			}
			blob := bytes.Repeat([]byte{0x5A}, 8192)
			write := func(path string, off int64) {
				d, err := Open(path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.WriteAt(blob, off); err != nil {
					t.Fatal(err)
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
			}
			write(p, c.from-3*8192)
			ch := filepath.Join(dir, "c.avhdx")
			if err := vhdx.Create(ch, vhdx.CreateOptions{Parent: p}); err != nil {
				t.Fatal(err)
			}
			write(ch, c.from-8192)
			alone := filepath.Join(dir, "a.vhdx")
			if err := vhdx.Create(alone, vhdx.CreateOptions{Size: c.from, BlockSize: c.bs, SectorSize: c.lss}); err != nil {
				t.Fatal(err)
			}
			write(alone, c.from-3*8192)
			write(alone, c.from-8192)
			for _, path := range []string{alone, ch} {
				if _, err := Resize(path, c.to, ResizeOptions{}); err != nil {
					t.Fatal(err)
				}
				checkClean(t, path)
				d, err := Open(path, &Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, 5*8192)
				if _, err := d.ReadAt(got, c.from-3*8192); err != nil {
					t.Fatal(err)
				}
				want := append(append(append([]byte(nil), blob...), make([]byte, 8192)...), blob...)
				want = append(want, make([]byte, 2*8192)...)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: the grown disk does not read as before plus zeros", path)
				}
				d.Close()
				write(path, c.to-8192)
				d, err = Open(path, &Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.ReadAt(got[:8192], c.to-8192); err != nil || !bytes.Equal(got[:8192], blob) {
					t.Fatal("the new end does not read back", err)
				}
				d.Close()
				checkClean(t, path)
			}
		})
	}
}
