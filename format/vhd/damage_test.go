package vhd

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// TestNewBlockPastClaims: a new block goes past every block a BAT entry
// claims, even one past the end of the file, so it never aliases it. (Such
// an image is refused for writing; the layer is made writable here to test
// the placement on its own.)
func TestNewBlockPastClaims(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.vhd")
	if err := Create(path, CreateOptions{Type: TypeDynamic, Size: 4 << 20, BlockSize: 2 << 20}, nil); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const bat = footerSize + headerSize // where Create puts the BAT
	if e := binary.BigEndian.Uint32(img[bat:]); e != unallocated {
		t.Fatalf("BAT entry 0 at 0x%x is 0x%x; the test expects the BAT there", bat, e)
	}
	// Block 0 moves just past the end of the file; block 1 stays free.
	sec := uint32(len(img)/512 + 1)
	binary.BigEndian.PutUint32(img[bat:], sec)
	claimEnd := int64(sec)*512 + 512 + 2<<20
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, f, Options{ReadOnly: true})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer l.Close()
	l.readOnly = false // write as if the check had not refused it
	if _, err := l.WriteAt([]byte{1}, 2<<20, bytes.NewReader(make([]byte, 4<<20))); err != nil {
		t.Fatal(err)
	}
	if start := int64(l.entry(1)) * 512; start < claimEnd {
		t.Fatalf("new block 1 at 0x%x, inside block 0's claim ending at 0x%x", start, claimEnd)
	}
}
