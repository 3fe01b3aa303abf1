package vhdx_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// growFile is an *os.File that counts fsyncs following an extension of
// the file and fails any extension past limit (when limit > 0).
type growFile struct {
	*os.File
	limit     int64
	extended  bool
	extSyncs  int
	truncates []int64
}

func (g *growFile) Truncate(n int64) error {
	g.truncates = append(g.truncates, n)
	if g.limit > 0 && n > g.limit {
		return errors.New("file too large (test)")
	}
	if fi, err := g.File.Stat(); err == nil && n > fi.Size() {
		g.extended = true
	}
	return g.File.Truncate(n)
}

func (g *growFile) Sync() error {
	if g.extended {
		g.extSyncs++
		g.extended = false
	}
	return g.File.Sync()
}

// TestReserveGrowth: a session writing into 512 new 1 MiB blocks in order
// extends the file (each extension synced) at most 4 times, reads back what
// it wrote, and leaves the file ending at its last block when closed. A
// filesystem that refuses the reserve but takes the block itself (a file
// size limit) still gets every write that fits, and the first that does not
// fit fails naming the extension, with the file checking clean.
func TestReserveGrowth(t *testing.T) {
	const bs, n = 1 << 20, 512
	path := filepath.Join(t.TempDir(), "d.vhdx")
	if err := vhdx.Create(path, vhdx.CreateOptions{Size: 2 << 30, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	open := func(limit int64) (*vhdx.Layer, *growFile) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		g := &growFile{File: f, limit: limit}
		l, err := vhdx.Open(path, g, vhdx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return l, g
	}
	l, g := open(0)
	p := make([]byte, 4096)
	for b := int64(0); b < n; b++ {
		copy(p, []byte{byte(b), byte(b >> 8), 0xA5})
		if _, err := l.WriteAt(p, b*bs+8192, zeroReader{}); err != nil {
			t.Fatal(err)
		}
	}
	if g.extSyncs > 4 {
		t.Errorf("%d synced extensions for %d new blocks (truncates %v), want at most 4", g.extSyncs, n, g.truncates)
	}
	for b := int64(0); b < n; b++ {
		got := readLayer(t, l, zeroReader{}, b*bs+8192, 4096)
		if !bytes.Equal(got[:3], []byte{byte(b), byte(b >> 8), 0xA5}) || !bytes.Equal(got[3:], make([]byte, 4093)) {
			t.Fatalf("block %d reads back differently", b)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	g.File.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	l, g = open(0)
	mustClean(t, l, "after the session")
	last := int64(0)
	for b := int64(0); b < n; b++ {
		runs, err := l.Map(nil, b*bs, bs)
		if err != nil || len(runs) != 1 {
			t.Fatalf("block %d maps to %v, %v", b, runs, err)
		}
		last = max(last, runs[0].FileOff+bs)
	}
	if fi.Size() != last {
		t.Errorf("the file ends at 0x%x after Close, its last block at 0x%x", fi.Size(), last)
	}
	l.Close()
	g.File.Close()

	// A file size limit 3 blocks past the end: the reserve is refused,
	// the blocks are taken one by one until the limit.
	l, g = open(fi.Size() + 3*bs)
	var err2 error
	wrote := 0
	for b := int64(n); b < n+5 && err2 == nil; b++ {
		if _, err2 = l.WriteAt(p, b*bs, zeroReader{}); err2 == nil {
			wrote++
		}
	}
	if wrote != 3 || err2 == nil || !strings.Contains(err2.Error(), "extending the file") {
		t.Fatalf("wrote %d blocks then %v; want 3 then an error extending the file", wrote, err2)
	}
	mustClean(t, l, "after the refused extension")
	l.Close()
	g.File.Close()
}
