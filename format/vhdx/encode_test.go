package vhdx

import (
	"bytes"
	"testing"
)

// TestHeaderEncodeRoundTrip encodes a header and parses it back with the
// reader, which checks the checksum independently (crcOK).
func TestHeaderEncodeRoundTrip(t *testing.T) {
	h := &Header{SequenceNumber: 7, Version: 1, LogLength: miB, LogOffset: miB}
	h.FileWriteGUID[0], h.DataWriteGUID[1], h.LogGUID[2] = 1, 2, 3
	b := h.encode()
	if len(b) != headerSize || string(b[:4]) != "head" {
		t.Fatalf("encoded header: %d bytes, signature %q", len(b), b[:4])
	}
	if s, c := crcOK(b, 4); s != c || s == 0 {
		t.Fatalf("checksum stored 0x%08x, computed 0x%08x", s, c)
	}
	// The fields sit where [MS-VHDX] 2.2.2 puts them.
	want := []struct {
		off int
		b   []byte
	}{{8, []byte{7, 0, 0, 0, 0, 0, 0, 0}}, {16, []byte{1}}, {33, []byte{2}}, {50, []byte{3}},
		{66, []byte{1, 0}}, {68, []byte{0, 0, 0x10, 0}}, {72, []byte{0, 0, 0x10, 0, 0, 0, 0, 0}}}
	for _, w := range want {
		if !bytes.Equal(b[w.off:w.off+len(w.b)], w.b) {
			t.Errorf("byte %d: % x, want % x", w.off, b[w.off:w.off+len(w.b)], w.b)
		}
	}
}
