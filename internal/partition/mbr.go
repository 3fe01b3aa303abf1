package partition

import (
	"encoding/binary"
	"fmt"
	"io"
)

// mbrEntry is one 16-byte entry of an MBR or EBR (CHS fields ignored: every
// tool since the 1990s writes the LBA fields, and Linux reads only those).
type mbrEntry struct {
	boot    byte
	typ     byte
	start   uint64 // first sector (relative, in an EBR)
	sectors uint64
}

func mbrEntries(s []byte) [4]mbrEntry {
	var es [4]mbrEntry
	for i := range es {
		b := s[446+16*i:]
		es[i] = mbrEntry{
			boot:    b[0],
			typ:     b[4],
			start:   uint64(binary.LittleEndian.Uint32(b[8:])),
			sectors: uint64(binary.LittleEndian.Uint32(b[12:])),
		}
	}
	return es
}

// isExtended reports whether an MBR type id is an extended partition
// (DOS 0x05, Windows LBA 0x0F, Linux 0x85).
func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0F || typ == 0x85 }

func readMBR(r io.ReaderAt, size int64, s0 []byte) (*Table, error) {
	t := &Table{Scheme: MBR, SectorSize: 512, DiskID: fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(s0[440:]))}
	var ext *mbrEntry
	for i, e := range mbrEntries(s0) {
		if e.typ == 0 || e.sectors == 0 {
			continue
		}
		p := Partition{Number: i + 1, Scheme: MBR, Type: fmt.Sprintf("%02x", e.typ), TypeName: mbrTypeName(e.typ),
			Bootable: e.boot == 0x80, Extended: isExtended(e.typ)}
		if !t.place(&p, e.start, e.sectors, 512, size) {
			continue
		}
		t.Partitions = append(t.Partitions, p)
		if p.Extended && ext == nil {
			e := e
			e.sectors = uint64(p.Size / 512)
			ext = &e
		}
	}
	if ext != nil {
		if err := t.readLogical(r, size, ext.start, ext.start+ext.sectors); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// readLogical follows the EBR chain of the extended partition that spans
// sectors [extStart, extEnd) and adds its logical partitions, numbered from
// 5. In each EBR the first data entry is the logical partition (its start
// relative to the EBR) and the first extended entry links to the next EBR
// (its start relative to extStart). A chain that loops, leaves the extended
// partition or is longer than maxLogical is an error; an EBR without the
// 0x55AA signature ends the chain (with a note), as it does for Linux.
func (t *Table) readLogical(r io.ReaderAt, size int64, extStart, extEnd uint64) error {
	seen := map[uint64]bool{}
	num := 5
	for ebr := extStart; ; {
		off := int64(ebr) * 512
		switch {
		case seen[ebr]:
			return fmt.Errorf("partition: mbr: the EBR chain loops back to sector %d (offset %d)", ebr, off)
		case len(seen) >= maxLogical:
			return fmt.Errorf("partition: mbr: the EBR chain is longer than %d entries (at sector %d)", maxLogical, ebr)
		case ebr < extStart || ebr >= extEnd:
			return fmt.Errorf("partition: mbr: an EBR link points to sector %d, outside the extended partition (sectors %d to %d)", ebr, extStart, extEnd-1)
		}
		seen[ebr] = true
		s, err := readAt(r, off, 512)
		if err != nil {
			return fmt.Errorf("partition: mbr: reading the EBR at sector %d (offset %d): %w", ebr, off, err)
		}
		if s[510] != 0x55 || s[511] != 0xAA {
			t.Notes = append(t.Notes, fmt.Sprintf("the EBR at sector %d (offset %d) has no 0x55AA signature: the chain of logical partitions ends there", ebr, off))
			return nil
		}
		var data, link *mbrEntry
		es := mbrEntries(s)
		for i := range es {
			e := &es[i]
			if e.typ == 0 || e.sectors == 0 {
				continue
			}
			if isExtended(e.typ) {
				if link == nil {
					link = e
				}
			} else if data == nil {
				data = e
			}
		}
		if data != nil {
			p := Partition{Number: num, Scheme: MBR, Type: fmt.Sprintf("%02x", data.typ), TypeName: mbrTypeName(data.typ), Bootable: data.boot == 0x80}
			if t.place(&p, ebr+data.start, data.sectors, 512, size) {
				t.Partitions = append(t.Partitions, p)
			}
			num++
		}
		if link == nil {
			return nil
		}
		ebr = extStart + link.start
	}
}
