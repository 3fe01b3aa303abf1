package vhdx

import (
	"encoding/binary"
	"hash/crc32"
	"unicode/utf16"
)

// setChecksum stores in b[at:at+4] the CRC-32C of b computed with that field
// zero, as every checksummed VHDX structure requires.
func setChecksum(b []byte, at int) {
	binary.LittleEndian.PutUint32(b[at:], 0)
	binary.LittleEndian.PutUint32(b[at:], crc32.Checksum(b, crcTable))
}

// encode returns h as its 4 KiB on-disk form, checksum included. Off is not
// stored (it is where the caller writes the result).
func (h *Header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, "head")
	binary.LittleEndian.PutUint64(b[8:], h.SequenceNumber)
	copy(b[16:], h.FileWriteGUID[:])
	copy(b[32:], h.DataWriteGUID[:])
	copy(b[48:], h.LogGUID[:])
	binary.LittleEndian.PutUint16(b[64:], h.LogVersion)
	binary.LittleEndian.PutUint16(b[66:], h.Version)
	binary.LittleEndian.PutUint32(b[68:], h.LogLength)
	binary.LittleEndian.PutUint64(b[72:], h.LogOffset)
	setChecksum(b, 4)
	return b
}

// regionEntry is one entry of a region table to encode.
type regionEntry struct {
	guid     GUID
	off, len int64
	required bool
}

// encodeRegionTable returns a 64 KiB region table holding entries, checksum
// included ([MS-VHDX] 2.2.3).
func encodeRegionTable(entries []regionEntry) []byte {
	b := make([]byte, regionSize)
	copy(b, "regi")
	binary.LittleEndian.PutUint32(b[8:], uint32(len(entries)))
	for i, r := range entries {
		e := b[16+32*i:]
		copy(e, r.guid[:])
		binary.LittleEndian.PutUint64(e[16:], uint64(r.off))
		binary.LittleEndian.PutUint32(e[24:], uint32(r.len))
		if r.required {
			binary.LittleEndian.PutUint32(e[28:], 1)
		}
	}
	setChecksum(b, 4)
	return b
}

// Metadata entry flags ([MS-VHDX] 2.2.4.1).
const (
	metaIsUser        = 1
	metaIsVirtualDisk = 2
	metaIsRequired    = 4
)

// metaItem is one metadata item to encode.
type metaItem struct {
	id    GUID
	flags uint32
	data  []byte
}

// encodeMetadata returns the start of a metadata region: the 64 KiB table
// followed by the items' data packed in order, as Windows lays them out.
func encodeMetadata(items []metaItem) []byte {
	size := metadataTableSize
	for _, it := range items {
		size += len(it.data)
	}
	b := make([]byte, size)
	copy(b, "metadata")
	binary.LittleEndian.PutUint16(b[10:], uint16(len(items)))
	off := metadataTableSize
	for i, it := range items {
		e := b[32+32*i:]
		copy(e, it.id[:])
		if len(it.data) > 0 {
			binary.LittleEndian.PutUint32(e[16:], uint32(off))
		}
		binary.LittleEndian.PutUint32(e[20:], uint32(len(it.data)))
		binary.LittleEndian.PutUint32(e[24:], it.flags)
		copy(b[off:], it.data)
		off += len(it.data)
	}
	return b
}

// encodeLocator returns a parent locator item of the VHDX locator type
// holding kv in order: the entry array, then each key and value as UTF-16LE
// without terminators ([MS-VHDX] 2.2.4.2.6).
func encodeLocator(kv []LocatorEntry) []byte {
	n := 20 + 12*len(kv)
	for _, e := range kv {
		n += 2 * (len(utf16.Encode([]rune(e.Key))) + len(utf16.Encode([]rune(e.Value))))
	}
	b := make([]byte, n)
	copy(b, guidVHDXLocatorType[:])
	binary.LittleEndian.PutUint16(b[18:], uint16(len(kv)))
	at := 20 + 12*len(kv)
	put := func(s string) (off, ln int) {
		off = at
		for _, u := range utf16.Encode([]rune(s)) {
			binary.LittleEndian.PutUint16(b[at:], u)
			at += 2
		}
		return off, at - off
	}
	for i, e := range kv {
		ent := b[20+12*i:]
		ko, kl := put(e.Key)
		vo, vl := put(e.Value)
		binary.LittleEndian.PutUint32(ent[0:], uint32(ko))
		binary.LittleEndian.PutUint32(ent[4:], uint32(vo))
		binary.LittleEndian.PutUint16(ent[8:], uint16(kl))
		binary.LittleEndian.PutUint16(ent[10:], uint16(vl))
	}
	return b
}

// encodeFileID returns the 64 KiB file type identifier: "vhdxfile" and the
// creator as UTF-16LE (at most 256 code units, cut there).
func encodeFileID(creator string) []byte {
	b := make([]byte, 64*kiB)
	copy(b, "vhdxfile")
	u := utf16.Encode([]rune(creator))
	if len(u) > 255 {
		u = u[:255] // keep a terminating zero unit
	}
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[8+2*i:], c)
	}
	return b
}
