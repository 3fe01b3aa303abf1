package format

import (
	"math/rand/v2"
	"testing"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// fakeLayer is a layer of blocks in given states that counts the table
// entries its Extent inspects.
type fakeLayer struct {
	blocks    []lay.State
	blockSize int64
	inspected *int64
}

func (f *fakeLayer) Path() string                                     { return "/fake" }
func (f *fakeLayer) Format() string                                   { return "fake" }
func (f *fakeLayer) Size() int64                                      { return int64(len(f.blocks)) * f.blockSize }
func (f *fakeLayer) SectorSize() int                                  { return 512 }
func (f *fakeLayer) ReadData(p []byte, off int64) error               { clear(p); return nil }
func (f *fakeLayer) Parent() *lay.ParentRef                           { return nil }
func (f *fakeLayer) MatchParent(lay.Layer) error                      { return nil }
func (f *fakeLayer) Close() error                                     { return nil }
func (f *fakeLayer) Map(r []lay.Run, off, n int64) ([]lay.Run, error) { panic("BUG: not used") }

func (f *fakeLayer) Extent(off, n int64) (lay.State, int64) {
	b := off / f.blockSize
	st := f.blocks[b]
	end := off + n
	for b++; b < int64(len(f.blocks)) && b*f.blockSize < end && f.blocks[b] == st; b++ {
		*f.inspected++
	}
	*f.inspected++
	return st, min(b*f.blockSize, end) - off
}

// TestAllocatedBytesOnePass: over a fragmented parent (every other block
// allocated) and an empty child, AllocatedBytes is right and costs one pass
// over each layer's table, not one per run (it was quadratic: 25 s for a
// large chain, recomputed on every GETATTR).
func TestAllocatedBytesOnePass(t *testing.T) {
	const nblocks, bs = 200_000, 4096
	var inspected int64
	rng := rand.New(rand.NewPCG(3, 3))
	parent := &fakeLayer{make([]lay.State, nblocks), bs, &inspected}
	child := &fakeLayer{make([]lay.State, nblocks), bs, &inspected}
	mid := &fakeLayer{make([]lay.State, nblocks), bs, &inspected}
	var want int64
	for i := range nblocks {
		if i%2 == 0 {
			parent.blocks[i] = lay.Data
		}
		if rng.IntN(50) == 0 {
			mid.blocks[i] = lay.Zero // hides the parent: a hole
		}
		if mid.blocks[i] != lay.Zero && parent.blocks[i] == lay.Data {
			want += bs
		}
	}
	d := &Disk{layers: []lay.Layer{child, mid, parent}, found: make([]lay.Candidate, 3), size: nblocks * bs}
	if got := d.AllocatedBytes(); got != want {
		t.Fatalf("AllocatedBytes %d, want %d", got, want)
	}
	// One pass looks at each entry of each layer a bounded number of times
	// (window edges add a few).
	if limit := int64(4 * 3 * nblocks); inspected > limit {
		t.Fatalf("inspected %d table entries for %d blocks in 3 layers; more than %d: not one pass", inspected, nblocks, limit)
	}
	// Holes and data alternate exactly as the model says.
	for off := int64(0); off < d.size; {
		data, end := d.Extent(off)
		b := off / bs
		if wantData := mid.blocks[b] != lay.Zero && parent.blocks[b] == lay.Data; data != wantData {
			t.Fatalf("Extent(%d) data=%v, want %v", off, data, wantData)
		}
		if end <= off || end > d.size {
			t.Fatalf("Extent(%d) ends at %d", off, end)
		}
		off = end
	}
}
