package format

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
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

// TestCreateChildFarFromParent: a child whose path to the parent, relative,
// is too long for the header's 256 UTF-16 units gets the absolute path there
// (as a snapshot child in a temporary directory may), and opens.
func TestCreateChildFarFromParent(t *testing.T) {
	dir := t.TempDir()
	if len(dir) > 200 {
		t.Skipf("the temporary directory %s is too long to build the paths this test needs", dir)
	}
	far := filepath.Join(append([]string{dir}, strings.Split(strings.Repeat("x/", 45), "/")...)...)
	deep := filepath.Join(dir, strings.Repeat("d", 250-len(dir)-len("/p.vhd")-1))
	for _, d := range []string{far, deep} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	parent, child := filepath.Join(deep, "p.vhd"), filepath.Join(far, "c.vhd")
	if rel, _ := filepath.Rel(far, parent); len(rel) <= 256 || len(parent) > 256 {
		t.Fatalf("test paths: relative %d, absolute %d characters", len(rel), len(parent))
	}
	if err := Create(parent, CreateOptions{Type: TypeDynamic, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(child, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.Layers()[0].ParentName; got != parent {
		t.Errorf("header name %q, want the absolute path", got)
	}
}
