package vhd

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Disk types as stored in the footer's DiskType field.
const (
	TypeFixed        = 2
	TypeDynamic      = 3
	TypeDifferencing = 4
)

// SectorSize is the VHD sector size; every offset in the format is a multiple of it.
const SectorSize = 512

const (
	footerSize     = 512
	headerSize     = 1024
	footerCookie   = "conectix"
	headerCookie   = "cxsparse"
	formatVersion  = 0x00010000
	headerVersion  = 0x00010000
	noDataOffset   = ^uint64(0)
	unallocated    = ^uint32(0)
	featureReserve = 2 // bit 1 must always be set
	// MaxVirtualSize is the largest virtual size this package creates:
	// the 2040 GiB the specification allows.
	MaxVirtualSize = 2040 << 30
	// maxOpenSize bounds the virtual size accepted when reading. It is larger
	// than the spec's limit because some producers exceed it, yet keeps every
	// derived count (BAT entries) far below what could exhaust memory
	// unchecked: the BAT is also bounded by the file's size.
	maxOpenSize = 64 << 40
)

// Footer is the 512-byte VHD footer (hard disk footer), big-endian on disk.
// binary.Size(Footer{}) == 512.
type Footer struct {
	Cookie          [8]byte   // 0x00 8 "conectix"
	Features        uint32    // 0x08 4 bit 0 temporary, bit 1 reserved (always set)
	FormatVersion   uint32    // 0x0C 4 0x00010000
	DataOffset      uint64    // 0x10 8 absolute offset of the dynamic header; all ones for fixed disks
	Timestamp       uint32    // 0x18 4 seconds since 2000-01-01 00:00:00 UTC
	CreatorApp      [4]byte   // 0x1C 4 e.g. "win ", "qemu", "vhdm"
	CreatorVersion  uint32    // 0x20 4 major<<16 | minor
	CreatorHostOS   [4]byte   // 0x24 4 "Wi2k", "Mac ", or zero
	OriginalSize    uint64    // 0x28 8 size at creation, bytes
	CurrentSize     uint64    // 0x30 8 virtual disk size, bytes
	Cylinders       uint16    // 0x38 2 CHS geometry
	Heads           uint8     // 0x3A 1
	SectorsPerTrack uint8     // 0x3B 1
	DiskType        uint32    // 0x3C 4 2 fixed, 3 dynamic, 4 differencing
	Checksum        uint32    // 0x40 4 one's complement of the byte sum, this field as zero
	UniqueID        uuid.UUID // 0x44 16 stored byte for byte
	SavedState      uint8     // 0x54 1
	Reserved        [427]byte // 0x55 427 XenServer uses byte 0x55 as a "hidden" flag
}

// checksum computes the VHD checksum of b, treating the 4 bytes at csOff as zero.
// It does not modify b.
func checksum(b []byte, csOff int) uint32 {
	var sum uint32
	for i, c := range b {
		if i >= csOff && i < csOff+4 {
			continue
		}
		sum += uint32(c)
	}
	return ^sum
}

// parseFooter decodes and validates a footer from b (512 bytes). off is the
// offset it was read from, for error messages. With ignoreChecksum a bad
// checksum is accepted.
func parseFooter(path string, b []byte, off int64, ignoreChecksum bool) (*Footer, error) {
	if string(b[:8]) != footerCookie {
		// Never the bytes found: the file may be anything (a parent locator
		// can name /etc/shadow), and its contents are not ours to print.
		return nil, formatErr(path, off, "footer Cookie", ErrNotVHD, "no %q cookie", footerCookie)
	}
	var f Footer
	if _, err := binary.Decode(b, binary.BigEndian, &f); err != nil {
		return nil, formatErr(path, off, "footer", ErrCorrupt, "%v", err)
	}
	if cs := checksum(b[:footerSize], 0x40); cs != f.Checksum && !ignoreChecksum {
		return nil, formatErr(path, off+0x40, "footer Checksum", ErrChecksum, "stored 0x%08x, computed 0x%08x", f.Checksum, cs)
	}
	if f.FormatVersion>>16 != 1 {
		return nil, formatErr(path, off+0x0C, "footer FormatVersion", ErrUnsupported, "have 0x%08x, want 0x00010000", f.FormatVersion)
	}
	switch f.DiskType {
	case TypeFixed, TypeDynamic, TypeDifferencing:
	default:
		return nil, formatErr(path, off+0x3C, "footer DiskType", ErrUnsupported, "type %d is not fixed (2), dynamic (3) or differencing (4)", f.DiskType)
	}
	if f.CurrentSize == 0 || f.CurrentSize%SectorSize != 0 || f.CurrentSize > maxOpenSize {
		return nil, formatErr(path, off+0x30, "footer CurrentSize", ErrCorrupt, "%d is zero, not a multiple of 512, or over %d", f.CurrentSize, uint64(maxOpenSize))
	}
	return &f, nil
}

// MarshalBinary encodes the footer, computing its checksum.
func (f *Footer) MarshalBinary() ([]byte, error) {
	b := make([]byte, footerSize)
	c := *f
	c.Checksum = 0
	if _, err := binary.Encode(b, binary.BigEndian, &c); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b[0x40:], checksum(b, 0x40))
	return b, nil
}

// Geometry returns the CHS geometry the VHD specification's appendix assigns
// to a disk of size bytes.
func Geometry(size int64) (cyl uint16, heads, spt uint8) {
	total := size / SectorSize
	if total > 65535*16*255 {
		total = 65535 * 16 * 255
	}
	var h, s, cth int64
	if total >= 65535*16*63 {
		s, h = 255, 16
		cth = total / s
	} else {
		s = 17
		cth = total / s
		h = (cth + 1023) / 1024
		if h < 4 {
			h = 4
		}
		if cth >= h*1024 || h > 16 {
			s, h = 31, 16
			cth = total / s
		}
		if cth >= h*1024 {
			s, h = 63, 16
			cth = total / s
		}
	}
	return uint16(cth / h), uint8(h), uint8(s)
}

// vhdEpoch is the VHD timestamp epoch.
var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// TimeFromVHD converts a VHD timestamp (seconds since 2000-01-01 UTC) to a time.
func TimeFromVHD(ts uint32) time.Time { return vhdEpoch.Add(time.Duration(ts) * time.Second) }

// TimeToVHD converts t to a VHD timestamp, clamped to the field's range.
func TimeToVHD(t time.Time) uint32 {
	s := t.Unix() - vhdEpoch.Unix()
	if s < 0 {
		return 0
	}
	if s > int64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(s)
}

// fourCC renders a 4-byte code for humans: printable ASCII as is, NUL as \0,
// other bytes as \xNN.
func fourCC(b [4]byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == 0:
			sb.WriteString(`\0`)
		case c < 0x20 || c > 0x7e:
			fmt.Fprintf(&sb, `\x%02x`, c)
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
