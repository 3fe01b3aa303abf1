package format

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateChildBlockSize: a differencing disk gets its parent's block size
// unless one is asked for; over a fixed parent, the default.
func TestCreateChildBlockSize(t *testing.T) {
	dir := t.TempDir()
	dyn, fixed := filepath.Join(dir, "dyn.vhd"), filepath.Join(dir, "fixed.vhd")
	if err := Create(dyn, CreateOptions{Type: TypeDynamic, Size: 8 << 20, BlockSize: 512 << 10}); err != nil {
		t.Fatal(err)
	}
	if err := Create(fixed, CreateOptions{Type: TypeFixed, Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, parent string
		ask, want    int64
	}{
		{"inherit", dyn, 0, 512 << 10},
		{"asked", dyn, 64 << 10, 64 << 10},
		{"fixed-parent", fixed, 0, DefaultBlockSize},
	} {
		child := filepath.Join(dir, c.name+".vhd")
		if err := Create(child, CreateOptions{Parent: c.parent, BlockSize: c.ask}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(child)
		if err != nil {
			t.Fatal(err)
		}
		// The header sits at 512; BlockSize at 0x20 in it (spec offsets).
		if got := int64(binary.BigEndian.Uint32(b[512+0x20:])); got != c.want {
			t.Errorf("%s: block size %d, want %d", c.name, got, c.want)
		}
	}
}
