package partition

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strings"
	"unicode/utf16"
)

// gptHeader is the part of a GPT header that locates the entry array.
type gptHeader struct {
	ss         int    // logical sector size
	lba        uint64 // where this header is (MyLBA)
	alt        uint64 // where the other header should be (AlternateLBA)
	diskGUID   string
	numEntries uint32
	entrySize  uint32
	array      []byte // the entry array, its CRC32 checked
}

var errNoSignature = errors.New(`no "EFI PART" signature`)

// readGPT reads the GPT of a disk whose sector 0 holds a protective (or
// hybrid) MBR: the primary header at LBA 1, else the backup at the last LBA,
// for logical sectors of 512 and then 4096 bytes.
func readGPT(r io.ReaderAt, size int64) (*Table, error) {
	var notes, reasons []string
	sizes := []int{512, 4096}
	for _, ss := range sizes {
		h, err := readGPTHeader(r, size, ss, 1)
		if err == nil {
			if b, berr := readGPTHeader(r, size, ss, h.alt); berr != nil {
				notes = append(notes, fmt.Sprintf("the backup GPT header (LBA %d, %d-byte sectors) is damaged: %v", h.alt, ss, berr))
			} else if last := uint64(size)/uint64(ss) - 1; b.lba != last {
				notes = append(notes, fmt.Sprintf("the backup GPT header is at LBA %d, not at the last LBA %d (the disk was resized?)", b.lba, last))
			}
			return gptTable(h, size, notes), nil
		}
		if !errors.Is(err, errNoSignature) {
			reasons = append(reasons, fmt.Sprintf("primary header (LBA 1, offset %d): %v", ss, err))
		}
	}
	for _, ss := range sizes {
		if uint64(size)/uint64(ss) < 3 {
			continue // no room for a backup header after LBA 1
		}
		last := uint64(size)/uint64(ss) - 1
		h, err := readGPTHeader(r, size, ss, last)
		if err == nil {
			why := "missing"
			if len(reasons) > 0 {
				why = "damaged (" + strings.Join(reasons, "; ") + ")"
			}
			notes = append(notes, fmt.Sprintf("the primary GPT is %s: using the backup header at LBA %d", why, last))
			return gptTable(h, size, notes), nil
		}
		if !errors.Is(err, errNoSignature) {
			reasons = append(reasons, fmt.Sprintf("backup header (LBA %d, offset %d): %v", last, int64(last)*int64(ss), err))
		}
	}
	if len(reasons) == 0 {
		return nil, errors.New(`partition: gpt: protective MBR but no "EFI PART" header at LBA 1 or at the last LBA (512- or 4096-byte sectors)`)
	}
	return nil, fmt.Errorf("partition: gpt: no valid header: %s", strings.Join(reasons, "; "))
}

// readGPTHeader reads and checks the header at lba and its entry array:
// signature, header size, both CRC32s, MyLBA, the usable range and the
// array's place, all bounded by the disk size.
func readGPTHeader(r io.ReaderAt, size int64, ss int, lba uint64) (*gptHeader, error) {
	sectors := uint64(size) / uint64(ss)
	if lba >= sectors {
		return nil, fmt.Errorf("LBA %d is past the end of the disk (%d sectors)", lba, sectors)
	}
	off := int64(lba) * int64(ss)
	b, err := readAt(r, off, ss)
	if err != nil {
		return nil, err
	}
	if string(b[:8]) != "EFI PART" {
		return nil, errNoSignature
	}
	le := binary.LittleEndian
	hs := le.Uint32(b[12:])
	if hs < 92 || hs > uint32(ss) {
		return nil, fmt.Errorf("header size %d (at offset %d) is not between 92 and %d", hs, off+12, ss)
	}
	hdr := bytes.Clone(b[:hs])
	want := le.Uint32(hdr[16:])
	clear(hdr[16:20])
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return nil, fmt.Errorf("header CRC32 is 0x%08x, the header records 0x%08x", got, want)
	}
	h := &gptHeader{ss: ss, lba: le.Uint64(b[24:]), alt: le.Uint64(b[32:]), diskGUID: guid(b[56:72]),
		numEntries: le.Uint32(b[80:]), entrySize: le.Uint32(b[84:])}
	first, last, entryLBA := le.Uint64(b[40:]), le.Uint64(b[48:]), le.Uint64(b[72:])
	switch {
	case h.lba != lba:
		return nil, fmt.Errorf("MyLBA is %d, but the header is at LBA %d", h.lba, lba)
	case first > last || last >= sectors:
		return nil, fmt.Errorf("usable sectors %d to %d do not fit a disk of %d sectors", first, last, sectors)
	case h.entrySize < 128 || h.entrySize > 4096 || h.entrySize&(h.entrySize-1) != 0:
		return nil, fmt.Errorf("entry size %d is not 128 times a power of two up to 4096", h.entrySize)
	case h.numEntries > maxGPTEntries || uint64(h.numEntries)*uint64(h.entrySize) > maxGPTArray:
		return nil, fmt.Errorf("%d entries of %d bytes: more than the limit of %d entries or %d bytes", h.numEntries, h.entrySize, maxGPTEntries, maxGPTArray)
	case entryLBA >= sectors || int64(entryLBA)*int64(ss)+int64(h.numEntries)*int64(h.entrySize) > size:
		return nil, fmt.Errorf("the entry array at LBA %d (%d entries of %d bytes) runs past the end of the disk", entryLBA, h.numEntries, h.entrySize)
	}
	aoff := int64(entryLBA) * int64(ss)
	h.array, err = readAt(r, aoff, int(h.numEntries)*int(h.entrySize))
	if err != nil {
		return nil, fmt.Errorf("reading the entry array at offset %d: %w", aoff, err)
	}
	if got, want := crc32.ChecksumIEEE(h.array), le.Uint32(b[88:]); got != want {
		return nil, fmt.Errorf("entry array CRC32 (array at offset %d) is 0x%08x, the header records 0x%08x", aoff, got, want)
	}
	return h, nil
}

// gptTable lists the used entries of a checked header's array.
func gptTable(h *gptHeader, size int64, notes []string) *Table {
	t := &Table{Scheme: GPT, SectorSize: h.ss, DiskID: h.diskGUID, Notes: notes}
	le := binary.LittleEndian
	for i := 0; i < int(h.numEntries); i++ {
		e := h.array[i*int(h.entrySize):]
		if allZero(e[:16]) {
			continue
		}
		p := Partition{Number: i + 1, Scheme: GPT, Type: guid(e[:16]), GUID: guid(e[16:32]),
			Attributes: le.Uint64(e[48:]), Name: utf16Name(e[56:128])}
		p.TypeName = gptTypeNames[p.Type]
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if last < first {
			t.Notes = append(t.Notes, fmt.Sprintf("partition %d ends (sector %d) before it starts (sector %d): ignored", p.Number, last, first))
			continue
		}
		n := uint64(math.MaxUint64)
		if last-first < math.MaxUint64 {
			n = last - first + 1
		}
		if t.place(&p, first, n, h.ss, size) {
			t.Partitions = append(t.Partitions, p)
		}
	}
	return t
}

// guid formats a GUID stored as on disk (first three fields little-endian)
// in upper case, as sgdisk and sfdisk print it.
func guid(b []byte) string {
	var s [16]byte
	s[0], s[1], s[2], s[3] = b[3], b[2], b[1], b[0]
	s[4], s[5], s[6], s[7] = b[5], b[4], b[7], b[6]
	copy(s[8:], b[8:16])
	x := strings.ToUpper(hex.EncodeToString(s[:]))
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

// utf16Name decodes a GPT name: UTF-16LE up to the first NUL.
func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
