package vhd

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// recFile records the writes made through it.
type recFile struct {
	*os.File
	writes [][2]int64 // offset, length
}

func (r *recFile) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, [2]int64{off, int64(len(p))})
	return r.File.WriteAt(p, off)
}

// TestSetBitsWritesChangedSector: a write into an allocated block sets the
// bits of the sectors it covers and writes only the bitmap sector that
// holds them (a block of 8 MiB has a bitmap of four sectors), and the bytes
// on disk are the model's: bit 0x80>>(s%8) of byte s/8 for each sector s
// written. A last block shorter than a byte of bits gets only its byte.
func TestSetBitsWritesChangedSector(t *testing.T) {
	const bs = 8 << 20
	const size = bs + 3*512 // the last block holds 3 sectors
	path := filepath.Join(t.TempDir(), "x.vhd")
	if err := Create(path, CreateOptions{Type: TypeDynamic, Size: size, BlockSize: bs}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rf := &recFile{File: f}
	l, err := Open(path, rf, Options{})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer l.Close()
	below := bytes.NewReader(make([]byte, size))
	p := bytes.Repeat([]byte{7}, 4096)
	model := make([]byte, bs/512/8)
	mark := func(off, n int64) {
		for s := off / 512; s < (off+n)/512; s++ {
			model[s/8] |= 0x80 >> (s % 8)
		}
	}
	write := func(off int64) {
		t.Helper()
		if _, err := l.WriteAt(p, off, below); err != nil {
			t.Fatal(err)
		}
		mark(off, int64(len(p)))
	}
	write(0) // allocates block 0
	bat := int64(footerSize + headerSize)
	var ent [4]byte
	if _, err := f.ReadAt(ent[:], bat); err != nil {
		t.Fatal(err)
	}
	start := int64(binary.BigEndian.Uint32(ent[:])) * 512
	for _, off := range []int64{5000 * 512, 5000*512 + 4096, 16000 * 512, 40 * 512} {
		rf.writes = nil
		write(off)
		bmSector := off / 512 / 8 / 512 * 512
		want := [][2]int64{{start + 2048 + off, 4096}, {start + bmSector, 512}}
		if len(rf.writes) != 2 || rf.writes[0] != want[0] || rf.writes[1] != want[1] {
			t.Fatalf("write at %d: file writes %v, want data then one bitmap sector %v", off, rf.writes, want)
		}
	}
	rf.writes = nil
	write(40 * 512) // bits already set: no bitmap write
	if len(rf.writes) != 1 {
		t.Fatalf("rewrite: file writes %v, want the data only", rf.writes)
	}
	got := make([]byte, len(model))
	if _, err := f.ReadAt(got, start); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatalf("bitmap on disk differs from the model")
	}
	runs, err := l.Map(nil, 0, bs)
	if err != nil {
		t.Fatal(err)
	}
	var present int64
	for _, r := range runs {
		if r.State == lay.Data {
			present += r.Len
		}
	}
	if present != 5*4096 {
		t.Fatalf("Map: %d bytes present, want %d", present, 5*4096)
	}

	// The last block: 3 sectors, a bitmap of one byte.
	pp := make([]byte, 512)
	pp[0] = 1
	if _, err := l.WriteAt(pp, bs+512, below); err != nil { // allocates
		t.Fatal(err)
	}
	if _, err := f.ReadAt(ent[:], bat+4); err != nil {
		t.Fatal(err)
	}
	start1 := int64(binary.BigEndian.Uint32(ent[:])) * 512
	rf.writes = nil
	if _, err := l.WriteAt(pp, bs+1024, below); err != nil {
		t.Fatal(err)
	}
	if want := [2]int64{start1, 1}; len(rf.writes) != 2 || rf.writes[1] != want {
		t.Fatalf("last block: file writes %v, want the data then %v", rf.writes, want)
	}
	var b [1]byte
	if _, err := f.ReadAt(b[:], start1); err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x60 {
		t.Fatalf("last block's bitmap byte 0x%02x, want 0x60", b[0])
	}
}
