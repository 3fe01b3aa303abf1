package vhd

import (
	"encoding/binary"
	"unicode/utf16"

	"github.com/google/uuid"
)

// ParentLocator is one of the eight parent locator entries of a dynamic header.
type ParentLocator struct {
	Code       [4]byte // 0x00 4 platform code: "W2ku", "W2ru", "MacX", "Mac ", "Wi2k", "Wi2r", or zero
	DataSpace  uint32  // 0x04 4 reserved space; sectors per the spec, bytes in practice (see dataSpaceBytes)
	DataLength uint32  // 0x08 4 payload length in bytes
	Reserved   uint32  // 0x0C 4
	DataOffset uint64  // 0x10 8 absolute offset of the payload
}

// DynamicHeader is the 1024-byte header of dynamic and differencing disks.
// binary.Size(DynamicHeader{}) == 1024.
type DynamicHeader struct {
	Cookie            [8]byte          // 0x000 8 "cxsparse"
	DataOffset        uint64           // 0x008 8 unused, all ones
	TableOffset       uint64           // 0x010 8 absolute offset of the BAT
	HeaderVersion     uint32           // 0x018 4 0x00010000
	MaxTableEntries   uint32           // 0x01C 4 number of BAT entries
	BlockSize         uint32           // 0x020 4 bytes of data per block
	Checksum          uint32           // 0x024 4 same rule as the footer's, over 1024 bytes
	ParentUniqueID    uuid.UUID        // 0x028 16 the parent's footer UniqueID
	ParentTimestamp   uint32           // 0x038 4 parent modification time, VHD epoch
	Reserved1         uint32           // 0x03C 4
	ParentUnicodeName [512]byte        // 0x040 512 UTF-16BE, NUL padded
	Locators          [8]ParentLocator // 0x240 8×24
	Reserved2         [256]byte        // 0x300 256
}

// Locator platform codes.
var (
	codeW2ku = [4]byte{'W', '2', 'k', 'u'}
	codeW2ru = [4]byte{'W', '2', 'r', 'u'}
	codeMacX = [4]byte{'M', 'a', 'c', 'X'}
)

const (
	locatorsOff    = 0x240
	locatorSize    = 24
	maxBlockSize   = 256 << 20
	maxLocatorData = 64 << 10 // a UTF-16 path of 32K characters
)

func parseHeader(path string, b []byte, off int64, ignoreChecksum bool) (*DynamicHeader, error) {
	if string(b[:8]) != headerCookie {
		return nil, formatErr(path, off, "dynamic header Cookie", ErrCorrupt, "no %q cookie", headerCookie)
	}
	var h DynamicHeader
	if _, err := binary.Decode(b, binary.BigEndian, &h); err != nil {
		return nil, formatErr(path, off, "dynamic header", ErrCorrupt, "%v", err)
	}
	if cs := checksum(b[:headerSize], 0x24); cs != h.Checksum && !ignoreChecksum {
		return nil, formatErr(path, off+0x24, "dynamic header Checksum", ErrChecksum, "stored 0x%08x, computed 0x%08x", h.Checksum, cs)
	}
	if h.HeaderVersion>>16 != 1 {
		return nil, formatErr(path, off+0x18, "dynamic header HeaderVersion", ErrUnsupported, "have 0x%08x, want 0x00010000", h.HeaderVersion)
	}
	if h.BlockSize < SectorSize || h.BlockSize%SectorSize != 0 || h.BlockSize > maxBlockSize {
		return nil, formatErr(path, off+0x20, "dynamic header BlockSize", ErrCorrupt, "%d is not a multiple of 512 between 512 and %d", h.BlockSize, maxBlockSize)
	}
	return &h, nil
}

// MarshalBinary encodes the header, computing its checksum.
func (h *DynamicHeader) MarshalBinary() ([]byte, error) {
	b := make([]byte, headerSize)
	c := *h
	c.Checksum = 0
	if _, err := binary.Encode(b, binary.BigEndian, &c); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[0x24:], checksum(b, 0x24))
	return b, nil
}

// dataSpaceBytes interprets a locator's DataSpace: the spec says sectors, but
// Windows, Virtual PC, VirtualBox and blktap write bytes. Values below 512
// cannot be a byte count of a sector-aligned area, so they are sectors.
func (l *ParentLocator) dataSpaceBytes() int64 {
	if l.DataSpace < SectorSize {
		return int64(l.DataSpace) * SectorSize
	}
	return int64(l.DataSpace)
}

// used reports whether the locator slot is in use.
func (l *ParentLocator) used() bool { return l.Code != [4]byte{} }

// decodeUTF16 decodes UTF-16 in the given byte order up to the first NUL.
// Unpaired surrogates become U+FFFD.
func decodeUTF16(b []byte, bo binary.ByteOrder) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := bo.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// encodeUTF16 encodes s as UTF-16 in the given byte order.
func encodeUTF16(s string, bo binary.ByteOrder) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		bo.PutUint16(b[2*i:], c)
	}
	return b
}
