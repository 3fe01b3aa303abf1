package vhdx

import (
	"encoding/binary"
	"hash/crc32"
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
