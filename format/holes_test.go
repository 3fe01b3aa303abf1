package format

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestFixedHoles: the extents and allocated bytes of a fixed disk follow
// the holes of its (sparse) file, before and after writes and discards.
func TestFixedHoles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.vhd")
	const size = 64 << 20
	if err := Create(path, CreateOptions{Type: TypeFixed, Size: size}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	extents := func() [][2]int64 {
		var out [][2]int64
		for off := int64(0); off < d.Size(); {
			data, end := d.Extent(off)
			if data {
				out = append(out, [2]int64{off, end})
			}
			off = end
		}
		return out
	}
	if got := extents(); len(got) != 0 {
		t.Fatalf("new fixed disk: data extents %v, want none", got)
	}
	if got := d.AllocatedBytes(); got != 0 {
		t.Errorf("new fixed disk: AllocatedBytes %d, want 0", got)
	}
	page := bytes.Repeat([]byte{7}, 4096)
	d.WriteAt(page, 8<<20)
	d.WriteAt(page[:100], 40<<20+10) // one page
	want := [][2]int64{{8 << 20, 8<<20 + 4096}, {40 << 20, 40<<20 + 4096}}
	if got := extents(); !equalExtents(got, want) {
		t.Errorf("data extents %v, want %v", got, want)
	}
	if got := d.AllocatedBytes(); got != 8192 {
		t.Errorf("AllocatedBytes %d, want 8192", got)
	}
	if err := d.Discard(8<<20, 4096); err != nil {
		t.Fatal(err)
	}
	if got := extents(); !equalExtents(got, want[1:]) {
		t.Errorf("after the discard: data extents %v, want %v", got, want[1:])
	}
	if got := d.AllocatedBytes(); got != 4096 {
		t.Errorf("after the discard: AllocatedBytes %d, want 4096", got)
	}
}

func equalExtents(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
