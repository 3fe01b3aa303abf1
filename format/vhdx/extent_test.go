package vhdx_test

import (
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestExtentMatchesMap: for every block of corpus images with ZERO,
// NOT_PRESENT, FULLY_PRESENT and PARTIALLY_PRESENT blocks, Extent (BAT only)
// gives the state Map (BAT and sector bitmaps) implies for the block: Data
// when any of it is stored here, else Zero or Parent; and a run Extent
// reports never spans blocks in another state.
func TestExtentMatchesMap(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	for _, rel := range []string{
		"generated/vhdx-qemu/dyn-1M-zero.vhdx.gz",
		"generated/vhdx-qemu/dyn-1M-nozero.vhdx.gz",
		"generated/vhdx-qemu/fixed-1M.vhdx.gz",
		"generated/dissect-avhdx-synthparent/differencing.avhdx.gz",
	} {
		t.Run(rel, func(t *testing.T) {
			l, err := openFile(testenv.Unpack(t, corpus, rel))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			info, err := l.Info()
			if err != nil {
				t.Fatal(err)
			}
			bs, size := info.BlockSize, l.Size()
			want := func(off int64) layer.State {
				n := min(bs, size-off)
				runs, err := l.Map(nil, off, n)
				if err != nil {
					t.Fatal(err)
				}
				st := runs[0].State
				for _, r := range runs {
					if r.State == layer.Data {
						return layer.Data
					}
				}
				return st
			}
			counts := map[layer.State]int{}
			for off := int64(0); off < size; {
				st, n := l.Extent(off, size-off)
				if n <= 0 || off+n > size {
					t.Fatalf("Extent(%d) = %v, %d", off, st, n)
				}
				for p := off; p < off+n; p += bs {
					if w := want(p); w != st {
						t.Fatalf("Extent(%d) says %v up to %d; Map says %v at %d", off, st, off+n, w, p)
					}
					counts[st]++
				}
				off += n
			}
			t.Logf("blocks by state: %v", counts)
		})
	}
}
