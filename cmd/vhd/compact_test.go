package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format"
)

// TestCompactCommand: a dynamic image with a zeroed block is compacted (the
// report says so, the file shrinks, the content stays); an image in use is
// refused.
func TestCompactCommand(t *testing.T) {
	img := filepath.Join(t.TempDir(), "c.vhd")
	if code, _, e := runVHD("create", img, "8M"); code != 0 {
		t.Fatal(e)
	}
	d, err := format.Open(img, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(bytes.Repeat([]byte{7}, 2<<20), 0)
	d.WriteAt(bytes.Repeat([]byte{8}, 2<<20), 4<<20)
	d.WriteAt(make([]byte, 2<<20), 4<<20) // block 2 now all zeros
	d.Close()
	before, _ := os.Stat(img)
	code, out, e := runVHD("compact", img)
	if code != 0 || !strings.Contains(out, "reclaimed") || !strings.Contains(out, "1 all-zero block(s) released") {
		t.Errorf("compact: exit %d, %q %q", code, out, e)
	}
	after, _ := os.Stat(img)
	if after.Size() > before.Size()-2<<20 {
		t.Errorf("file %d bytes before, %d after; want a block less", before.Size(), after.Size())
	}
	d, err = format.Open(img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, 8<<20)
	d.ReadAt(got, 0)
	want := append(bytes.Repeat([]byte{7}, 2<<20), make([]byte, 6<<20)...)
	if !bytes.Equal(got, want) {
		t.Error("content changed")
	}
	if code, _, e := runVHD("compact", img); code != 1 || !strings.Contains(e, "in use") {
		t.Errorf("compact of an image in use: exit %d, %q", code, e)
	}
}
