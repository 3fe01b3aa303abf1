package vhdx

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// oneSectorEntry is a log entry with no descriptors.
func oneSectorEntry(seq uint64, tail uint32, guid GUID) []byte {
	e := make([]byte, logSector)
	copy(e, "loge")
	binary.LittleEndian.PutUint32(e[8:], logSector)
	binary.LittleEndian.PutUint32(e[12:], tail)
	binary.LittleEndian.PutUint64(e[16:], seq)
	copy(e[32:], guid[:])
	binary.LittleEndian.PutUint32(e[4:], crc32.Checksum(e, crcTable))
	return e
}

// TestActiveSequenceLinear: a 64 MiB log (the most we replay) full of
// one-sector entries with consecutive sequence numbers, whose head names a
// tail outside the run, holds no active sequence. Scanning it must look at
// each entry a bounded number of times, not walk the rest of the run from
// every sector (16,383 entries: 134 million steps).
func TestActiveSequenceLinear(t *testing.T) {
	const ll = maxLogLength
	n := int64(ll / logSector)
	guid := GUID{1, 2, 3}
	buf := make([]byte, ll)
	empty := uint32((n - 1) * logSector) // the one sector left empty
	for i := int64(0); i < n-1; i++ {
		copy(buf[i*logSector:], oneSectorEntry(uint64(100+i), empty, guid))
	}
	r := newLogReader(&Layer{path: "hostile.vhdx", headers: [2]*Header{{}, {}}}, buf, guid)
	seq, err := r.activeSequence()
	if err != nil || seq != nil {
		t.Fatalf("got %d entries, %v; want no sequence", len(seq), err)
	}
	if r.lookups > 4*n {
		t.Fatalf("%d entry lookups over %d entries", r.lookups, n)
	}
	// With the head's tail at the first entry, the whole run is the sequence.
	copy(buf[(n-2)*logSector:], oneSectorEntry(uint64(100+n-2), 0, guid))
	r = newLogReader(&Layer{path: "ok.vhdx", headers: [2]*Header{{}, {}}}, buf, guid)
	seq, err = r.activeSequence()
	if err != nil || int64(len(seq)) != n-1 || seq[0].off != 0 || seq[len(seq)-1].seq != uint64(100+n-2) {
		t.Fatalf("got %d entries, %v; want %d from offset 0", len(seq), err, n-1)
	}
}

// TestActiveSequenceMergedRuns: entry A (two sectors) and entry B (in A's
// second sector) both have sequence number 5 and so both lead to C (6),
// whose tail is B. The run from A reaches C but does not hold B; the run
// from B does: the active sequence is B, C.
func TestActiveSequenceMergedRuns(t *testing.T) {
	guid := GUID{9}
	buf := make([]byte, 8*logSector)
	copy(buf[logSector:], oneSectorEntry(5, logSector, guid))
	copy(buf[2*logSector:], oneSectorEntry(6, logSector, guid))
	a := buf[:2*logSector]
	copy(a, "loge")
	binary.LittleEndian.PutUint32(a[8:], 2*logSector)
	binary.LittleEndian.PutUint32(a[12:], 0)
	binary.LittleEndian.PutUint64(a[16:], 5)
	copy(a[32:], guid[:])
	binary.LittleEndian.PutUint32(a[4:], 0)
	sum := crc32.Update(0, crcTable, a[:4])
	sum = crc32.Update(sum, crcTable, []byte{0, 0, 0, 0})
	sum = crc32.Update(sum, crcTable, a[8:])
	binary.LittleEndian.PutUint32(a[4:], sum)
	r := newLogReader(&Layer{path: "merged.vhdx", headers: [2]*Header{{}, {}}}, buf, guid)
	seq, err := r.activeSequence()
	if err != nil || len(seq) != 2 || seq[0].off != logSector || seq[1].off != 2*logSector {
		t.Fatalf("got %d entries (%v), %v; want B at 0x1000, C at 0x2000", len(seq), seq, err)
	}
	if !r.merged {
		t.Fatal("the runs from A and B were not seen to merge at C")
	}
}
