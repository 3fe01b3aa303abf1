package vhd

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestLayoutSizes(t *testing.T) {
	if n := binary.Size(Footer{}); n != 512 {
		t.Errorf("Footer is %d bytes, want 512", n)
	}
	if n := binary.Size(DynamicHeader{}); n != 1024 {
		t.Errorf("DynamicHeader is %d bytes, want 1024", n)
	}
	if n := binary.Size(ParentLocator{}); n != 24 {
		t.Errorf("ParentLocator is %d bytes, want 24", n)
	}
}

// TestGeometry uses the CHS values real producers wrote (corpus README and
// images): Windows, Hyper-V, qemu.
func TestGeometry(t *testing.T) {
	for _, c := range []struct {
		size    int64
		c       uint16
		h, s    uint8
		creator string
	}{
		{10485760, 301, 4, 17, "Windows 10, node-vhd/fixed.vhd"},
		{41943040, 963, 5, 17, "Windows 10, go-vhd/win8-child.vhd"},
		{536870912, 1040, 16, 63, "Windows 10, node-vhd/dynamic.vhd"},
		{136365211648, 65278, 16, 255, "Hyper-V 2012 R2"},
		{5257216, 151, 4, 17, "vhd-lib --chs-round, chain-winabs (151*4*17*512)"},
		{10514432, 302, 4, 17, "qemu-img ext4-10M512.dyn (CHS-rounded)"},
		{3221471232, 6242, 16, 63, "qemu-img ext4-3G.dyn"},
		{3 << 50, 65535, 16, 255, "clamped to the maximum"},
	} {
		cyl, h, s := Geometry(c.size)
		if cyl != c.c || h != c.h || s != c.s {
			t.Errorf("Geometry(%d) = %d/%d/%d, want %d/%d/%d (%s)", c.size, cyl, h, s, c.c, c.h, c.s, c.creator)
		}
	}
}

// validFooter is a dynamic disk's footer of 4 MiB, written field by field
// from the specification's layout (not with this package's encoder).
func validFooter() []byte {
	b := make([]byte, 512)
	copy(b, "conectix")
	binary.BigEndian.PutUint32(b[8:], 2)        // Features: reserved bit
	binary.BigEndian.PutUint32(b[12:], 0x10000) // FormatVersion
	binary.BigEndian.PutUint64(b[16:], 512)     // DataOffset
	binary.BigEndian.PutUint64(b[40:], 4<<20)   // OriginalSize
	binary.BigEndian.PutUint64(b[48:], 4<<20)   // CurrentSize
	binary.BigEndian.PutUint32(b[60:], 3)       // DiskType: dynamic
	copy(b[68:], []byte{1, 2, 3})               // UniqueID
	binary.BigEndian.PutUint32(b[64:], tChecksum(b))
	return b
}

// tChecksum is the VHD checksum as the specification defines it: the one's
// complement of the byte sum of b (the caller zeroes the checksum field).
func tChecksum(b []byte) uint32 {
	var s uint32
	for _, c := range b {
		s += uint32(c)
	}
	return ^s
}

// messWith returns a copy of b with fn applied and, unless keepSum, the
// footer checksum recomputed.
func messFooter(fn func(b []byte), keepSum bool) []byte {
	b := validFooter()
	fn(b)
	if !keepSum {
		binary.BigEndian.PutUint32(b[64:], 0)
		binary.BigEndian.PutUint32(b[64:], tChecksum(b))
	}
	return b
}

func TestParseFooterErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		b     []byte
		want  error
		field string
	}{
		{"valid", validFooter(), nil, ""},
		{"cookie", messFooter(func(b []byte) { b[0] = 'x' }, false), ErrNotVHD, "Cookie"},
		{"checksum", messFooter(func(b []byte) { b[100] ^= 1 }, true), ErrChecksum, "Checksum"},
		{"version", messFooter(func(b []byte) { b[13] = 2 }, false), ErrUnsupported, "FormatVersion"},
		{"type 5", messFooter(func(b []byte) { b[63] = 5 }, false), ErrUnsupported, "DiskType"},
		{"type 0", messFooter(func(b []byte) { b[63] = 0 }, false), ErrUnsupported, "DiskType"},
		{"size zero", messFooter(func(b []byte) { clear(b[48:56]) }, false), ErrCorrupt, "CurrentSize"},
		{"size odd", messFooter(func(b []byte) { b[55] = 1 }, false), ErrCorrupt, "CurrentSize"},
		{"size huge", messFooter(func(b []byte) { b[48] = 0x7f }, false), ErrCorrupt, "CurrentSize"},
		{"reserved bytes set", messFooter(func(b []byte) { b[85] = 1; b[300] = 9 }, false), nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := append([]byte(nil), c.b...)
			f, err := parseFooter("x.vhd", c.b, 1000, false)
			if !reflect.DeepEqual(orig, c.b) {
				t.Fatal("parseFooter modified its input")
			}
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if f.CurrentSize != 4<<20 {
					t.Fatalf("CurrentSize %d", f.CurrentSize)
				}
				return
			}
			var fe *FormatError
			if !errors.Is(err, c.want) || !errors.As(err, &fe) || !strings.Contains(fe.Field, c.field) || fe.Path != "x.vhd" || fe.Off < 1000 {
				t.Fatalf("got %v, want %v in field %s", err, c.want, c.field)
			}
		})
	}
	if _, err := parseFooter("x", messFooter(func(b []byte) { b[100] ^= 1 }, true), 0, true); err != nil {
		t.Errorf("IgnoreChecksums: %v", err)
	}
}

func TestFooterRoundTrip(t *testing.T) {
	f := newFooter(CreateOptions{Type: TypeDynamic, Size: 10 << 30, UniqueID: uuid.New()})
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	g, err := parseFooter("", b, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	f.Checksum = g.Checksum
	if !reflect.DeepEqual(f, g) {
		t.Fatalf("round trip: %+v != %+v", f, g)
	}
	if tChecksum(append(append([]byte{}, b[:64]...), b[68:]...)) != binary.BigEndian.Uint32(b[64:]) {
		t.Fatal("checksum differs from the test's own computation")
	}
}
