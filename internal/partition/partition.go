// Package partition reads MBR and GPT partition tables from a disk given as
// an io.ReaderAt and its size. It never writes. Every number read from the
// disk is bounded against the disk size before it is used; a partition that
// starts past the end of the disk is left out and one that runs past the end
// is clipped to it (both with a note), as the Linux kernel does.
package partition

import (
	"errors"
	"fmt"
	"io"
)

// ErrNoTable is returned by Read when the disk has no partition table: no
// 0x55AA signature in sector 0, a boot sector whose four entries cannot be
// a partition table (a filesystem without a table), or four empty entries.
var ErrNoTable = errors.New("no partition table")

// Schemes of a Table.
const (
	MBR = "mbr"
	GPT = "gpt"
)

// Table is a partition table as read from a disk.
type Table struct {
	Scheme     string // MBR or GPT
	SectorSize int    // logical sector size the table is in: 512 or 4096 (MBR: 512)
	// DiskID is the MBR disk signature as 0x%08x, or the GPT disk GUID.
	DiskID     string
	Partitions []Partition
	// Notes say what was repaired or left out while reading: a damaged
	// primary GPT (the backup was used), a damaged backup, partitions
	// clipped or ignored at the end of the disk, an EBR chain cut short.
	Notes []string
}

// Partition is one entry of a table.
type Partition struct {
	// Number is the partition's number as Linux gives it: the slot (1 to 4
	// for MBR primary entries, the entry index + 1 for GPT); MBR logical
	// partitions are numbered from 5 in the order of the EBR chain.
	Number int
	Scheme string // MBR or GPT
	// Type is the MBR type id as two hex digits ("83"), or the GPT
	// partition type GUID in upper case.
	Type string
	// TypeName is a name for Type ("Linux filesystem"), "" when unknown.
	TypeName string
	Start    int64 // offset of the first byte on the disk
	Size     int64 // length in bytes (after clipping at the end of the disk)
	// Name is the GPT partition name (UTF-16LE on disk), "" for MBR.
	Name string
	// GUID is the GPT unique partition GUID, "" for MBR.
	GUID string
	// Attributes are the GPT attribute flags (bit 0 required, bit 2
	// legacy BIOS bootable, bits 48-63 type-specific); 0 for MBR.
	Attributes uint64
	Bootable   bool // MBR boot indicator 0x80
	// Extended marks an MBR extended partition: a container for logical
	// partitions, not a filesystem.
	Extended bool
	// Clipped is set when the table says the partition runs past the end
	// of the disk; Size is then what lies on the disk.
	Clipped bool
}

// Limits on what a table may make us read.
const (
	maxLogical    = 256     // logical partitions in an EBR chain
	maxGPTEntries = 1 << 16 // entries in a GPT array
	maxGPTArray   = 4 << 20 // bytes in a GPT entry array
)

// Read reads the partition table of a disk of size bytes. It returns
// ErrNoTable when there is none, and another error naming the structure and
// its offset when the table is damaged beyond use (a GPT whose primary and
// backup headers are both invalid, an EBR chain that loops or leaves the
// extended partition, an unreadable sector).
func Read(r io.ReaderAt, size int64) (*Table, error) {
	if size < 512 {
		return nil, ErrNoTable
	}
	s0, err := readAt(r, 0, 512)
	if err != nil {
		return nil, fmt.Errorf("partition: reading sector 0: %w", err)
	}
	if s0[510] != 0x55 || s0[511] != 0xAA {
		return nil, ErrNoTable
	}
	ents := mbrEntries(s0)
	protective := false
	for _, e := range ents {
		if e.boot != 0 && e.boot != 0x80 {
			return nil, ErrNoTable // a boot sector, not a table
		}
		if e.typ == 0xEE {
			protective = true
		}
	}
	if protective {
		return readGPT(r, size)
	}
	empty := true
	for _, e := range ents {
		if e.typ != 0 && e.sectors != 0 {
			empty = false
		}
	}
	if empty {
		return nil, ErrNoTable
	}
	return readMBR(r, size, s0)
}

// readAt reads exactly n bytes at off.
func readAt(r io.ReaderAt, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	got, err := r.ReadAt(b, off)
	if got == n {
		return b, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// place bounds a partition of count sectors of ss bytes from sector first
// against the disk size: ok is false when it starts at or past the end (it
// is then left out); otherwise p gets Start and Size, clipped at the end.
func (t *Table) place(p *Partition, first, count uint64, ss int, size int64) bool {
	sectors := uint64(size) / uint64(ss)
	if first >= sectors {
		t.Notes = append(t.Notes, fmt.Sprintf("partition %d starts at sector %d, past the end of the disk (%d sectors): ignored", p.Number, first, sectors))
		return false
	}
	p.Start = int64(first) * int64(ss)
	if count > sectors-first {
		t.Notes = append(t.Notes, fmt.Sprintf("partition %d (sectors %d+%d) runs past the end of the disk (%d sectors): clipped", p.Number, first, count, sectors))
		count = sectors - first
		p.Clipped = true
	}
	p.Size = int64(count) * int64(ss)
	return true
}
