package vhdx_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// reviewLogImage returns a small dynamic image (no log) given a pending log
// of a single entry (sequence 1, its own tail) holding descs: the current
// header names the log's GUID.
func reviewLogImage(t *testing.T, descs []tDesc) []byte {
	return reviewLogImageLast(t, 0, descs)
}

// reviewLogImageLast is reviewLogImage with the entry's LastFileOffset set
// to last (0: the file's size).
func reviewLogImageLast(t *testing.T, last int64, descs []tDesc) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	l := smallLayer(rng, false)
	img := buildBytes(t, rng, l)
	h := img[64<<10 : 64<<10+4096]
	if h2 := img[128<<10 : 128<<10+4096]; binary.LittleEndian.Uint64(h2[8:]) > binary.LittleEndian.Uint64(h[8:]) {
		h = h2
	}
	guid := [16]byte{0xAB, 0xCD, 1, 2, 3, 4, 0x42, 0x42, 1, 2, 3, 4, 5, 6, 7, 8}
	copy(h[48:], guid[:])
	putCRC(h, 4)
	logOff := int64(binary.LittleEndian.Uint64(h[72:]))
	logLen := int64(binary.LittleEndian.Uint32(h[68:]))
	clear(img[logOff : logOff+logLen])
	fe := int64(len(img))
	if last == 0 {
		last = fe
	}
	copy(img[logOff:], tLogEntry(1, 0, guid, fe, last, descs))
	return img
}

// TestReplayZeroDescriptorFarPastFile: a log zero descriptor aimed far past
// the file's end (512 TiB) is not replayed into the file by a read-write
// open: the open is refused, and the file does not grow.
func TestReplayZeroDescriptorFarPastFile(t *testing.T) {
	const far = int64(1) << 49
	img := reviewLogImage(t, []tDesc{{zero: true, fileOff: far, zeroLen: 4096}})
	f := newRWFile(img)
	_, err := vhdx.Open("/r/far.vhdx", f, vhdx.Options{})
	if err == nil && f.size > int64(len(img)) {
		t.Fatalf("read-write open replayed a zero descriptor at 0x%x: the file grew from %d to %d bytes; want the log refused (descriptor past LastFileOffset %d)",
			far, len(img), f.size, len(img))
	}
}

// TestPowerCutBATBeforeExtension: WriteAt into a NOT_PRESENT block publishes
// its BAT entry only after the file's extension is durable (synced): a power
// cut after which only the unsynced BAT write reached the disk (ext4 may
// write an overwrite of an existing page before a size change) leaves an
// image that opens and reads the old data.
func TestPowerCutBATBeforeExtension(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vhdx")
	if err := vhdx.Create(p, vhdx.CreateOptions{Size: 64 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f := newRWFile(img)
	f.record = true
	l, err := vhdx.Open(p, f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5A}, 4096)
	if _, err := l.WriteAt(data, 40<<20, nil); err != nil {
		t.Fatal(err)
	}
	ops := f.ops
	lastSync := -1
	for i, o := range ops {
		if o.kind == 's' {
			lastSync = i
		}
	}
	// Durable state after a power cut: everything up to the last fsync, then
	// (of the unsynced operations) only the BAT entry's 8-byte write.
	g := newRWFile(img)
	for _, o := range ops[:lastSync+1] {
		g.apply(o)
	}
	found := false
	for _, o := range ops[lastSync+1:] {
		if o.kind == 'w' && len(o.data) == 8 {
			g.apply(o)
			found = true
		}
	}
	if !found {
		t.Fatalf("no unsynced 8-byte BAT write among %d operations after the last sync", len(ops)-lastSync-1)
	}
	ro, err := vhdx.Open(p, g, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("after a power cut between the file extension and the BAT publication, the image does not open: %v", err)
	}
	got := make([]byte, 4096)
	if _, err := (chain{ro}).ReadAt(got, 40<<20); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, data) && !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("the sector reads neither the old nor the new data")
	}
}

// TestReplayHugeLastFileOffset: a log entry whose LastFileOffset is 512 TiB
// does not make a read-write open extend an 8 MiB file to it.
func TestReplayHugeLastFileOffset(t *testing.T) {
	const last = int64(1) << 49
	zero := tDesc{zero: true, fileOff: 7 << 20, zeroLen: 4096} // inside the file, past every structure
	img := reviewLogImageLast(t, last, []tDesc{zero})
	f := newRWFile(img)
	_, err := vhdx.Open("/r/last.vhdx", f, vhdx.Options{})
	if err == nil && f.size > int64(len(img)) {
		t.Fatalf("read-write open extended the file from %d to %d bytes for the log's LastFileOffset; want a bound (refuse, or extend only as far as the replayed structures need)", len(img), f.size)
	}
}

// TestPowerCutChildPadding: a 100-byte write into a NOT_PRESENT block of a
// child copies the rest of its sector up from the parent; that copy is
// durable before the bits and BAT entry that make the sector the child's. A
// power cut that keeps every unsynced overwrite of existing pages but no
// unsynced write into new space leaves the parent's bytes around the write
// readable.
func TestPowerCutChildPadding(t *testing.T) {
	dir := t.TempDir()
	pp, cp := filepath.Join(dir, "p.vhdx"), filepath.Join(dir, "c.avhdx")
	if err := vhdx.Create(pp, vhdx.CreateOptions{Size: 16 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	pf, err := os.OpenFile(pp, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	pw, err := vhdx.Open(pp, pf, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0xA5}, 4096)
	if _, err := pw.WriteAt(old, 4<<20, nil); err != nil {
		t.Fatal(err)
	}
	if err := pw.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := vhdx.Create(cp, vhdx.CreateOptions{Parent: pp}); err != nil {
		t.Fatal(err)
	}
	pr, err := vhdx.Open(pp, mustOpen(t, pp), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	below := chainReader{chain{pr}}
	img, err := os.ReadFile(cp)
	if err != nil {
		t.Fatal(err)
	}
	f := newRWFile(img)
	f.record = true
	c, err := vhdx.Open(cp, f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(bytes.Repeat([]byte{0x3C}, 100), 4<<20+100, below); err != nil {
		t.Fatal(err)
	}
	ops := f.ops
	lastSync := -1
	for i, o := range ops {
		if o.kind == 's' {
			lastSync = i
		}
	}
	// Durable: everything up to the last fsync, the file extension, the
	// bitmap and BAT writes (small overwrites of existing pages); not the
	// data written into the new block.
	g := newRWFile(img)
	for _, o := range ops[:lastSync+1] {
		g.apply(o)
	}
	dropped := 0
	for _, o := range ops[lastSync+1:] {
		if o.kind == 'w' && o.off >= int64(len(img)) {
			dropped++
			continue
		}
		g.apply(o)
	}
	if dropped == 0 {
		t.Log("every write into new space was synced before the bits and BAT entry")
	}
	ro, err := vhdx.Open(cp, g, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open after the cut: %v", err)
	}
	got := make([]byte, 100)
	if _, err := (chainReader{chain{ro, pr}}).ReadAt(got, 4<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old[:100]) {
		t.Fatalf("bytes 0-99 of the sector, never written in the child, read % x...; want the parent's a5", got[:8])
	}
}
