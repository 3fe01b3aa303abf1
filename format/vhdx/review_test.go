package vhdx_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// reviewLogImage returns a small dynamic image (no log) given a pending log
// of a single entry (sequence 1, its own tail) holding descs: the current
// header names the log's GUID.
func reviewLogImage(t *testing.T, descs []tDesc) []byte {
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
	copy(img[logOff:], tLogEntry(1, 0, guid, fe, fe, descs))
	return img
}

// TestReviewReplayZeroDescriptorFarPastFile: a log zero descriptor aimed far
// past the file's end and past the entry's LastFileOffset is replayed into
// the file on a read-write open: the file is extended to 512 TiB (sparse
// here; on a real filesystem it either fails late or, for a long
// descriptor, writes terabytes of zeros one MiB at a time).
func TestReviewReplayZeroDescriptorFarPastFile(t *testing.T) {
	const far = int64(1) << 49
	img := reviewLogImage(t, []tDesc{{zero: true, fileOff: far, zeroLen: 4096}})
	f := newRWFile(img)
	_, err := vhdx.Open("/r/far.vhdx", f, vhdx.Options{})
	if err == nil && f.size > int64(len(img)) {
		t.Fatalf("read-write open replayed a zero descriptor at 0x%x: the file grew from %d to %d bytes; want the log refused (descriptor past LastFileOffset %d)",
			far, len(img), f.size, len(img))
	}
}
