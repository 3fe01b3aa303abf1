package format

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
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

func validFooter() []byte {
	l := &tLayer{typ: 3, size: 4 << 20}
	l.uuid = [16]byte{1, 2, 3}
	return tFooter(l, 512)
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

// TestOpenErrors corrupts single fields of a whole dynamic image.
func TestOpenErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	base := randomLayer(rng, 3, 4<<20, 2<<20, 1).image()
	hdrSum := func(b []byte) {
		h := b[512:1536]
		binary.BigEndian.PutUint32(h[36:], 0)
		binary.BigEndian.PutUint32(h[36:], tChecksum(h))
	}
	for _, c := range []struct {
		name string
		mess func(b []byte) []byte
		want error
		text string
	}{
		{"empty file", func(b []byte) []byte { return nil }, ErrNotVHD, "only 0 bytes"},
		{"text file", func(b []byte) []byte { return []byte(strings.Repeat("hello\n", 200)) }, ErrNotVHD, "Cookie"},
		{"header cookie", func(b []byte) []byte { b[512] = 'X'; hdrSum(b); return b }, ErrCorrupt, "Cookie"},
		{"header checksum", func(b []byte) []byte { b[512+700] ^= 1; return b }, ErrChecksum, "dynamic header Checksum"},
		{"block size 0", func(b []byte) []byte { clear(b[512+32 : 512+36]); hdrSum(b); return b }, ErrCorrupt, "BlockSize"},
		{"block size 1 GiB", func(b []byte) []byte { binary.BigEndian.PutUint32(b[512+32:], 1<<30); hdrSum(b); return b }, ErrCorrupt, "BlockSize"},
		{"too few entries", func(b []byte) []byte { binary.BigEndian.PutUint32(b[512+28:], 1); hdrSum(b); return b }, ErrCorrupt, "MaxTableEntries"},
		{"BAT past EOF", func(b []byte) []byte { binary.BigEndian.PutUint64(b[512+16:], 1<<40); hdrSum(b); return b }, ErrCorrupt, "TableOffset"},
		{"huge entries", func(b []byte) []byte { binary.BigEndian.PutUint32(b[512+28:], 0xFFFFFFFF); hdrSum(b); return b }, ErrCorrupt, "MaxTableEntries"},
		{"data offset past EOF", func(b []byte) []byte {
			n := len(b)
			for _, o := range []int{0, n - 512} {
				binary.BigEndian.PutUint64(b[o+16:], 1<<50)
				binary.BigEndian.PutUint32(b[o+64:], 0)
				binary.BigEndian.PutUint32(b[o+64:], tChecksum(b[o:o+512]))
			}
			return b
		}, ErrCorrupt, "DataOffset"},
		{"end footer bad, copy good", func(b []byte) []byte { b[len(b)-1] ^= 0xFF; return b }, nil, ""},
		{"511-byte footer", func(b []byte) []byte { return b[:len(b)-1] }, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := c.mess(append([]byte(nil), base...))
			fsys := memFS{"/x.vhd": newMemFile("/x.vhd", img)}
			d, err := Open("/x.vhd", fsys.opts())
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				d.Close()
				return
			}
			if err == nil {
				d.Close()
				t.Fatalf("opened; want %v", c.want)
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) || !strings.Contains(err.Error(), "/x.vhd") {
				t.Fatalf("got %q, want %v mentioning %q and the file", err, c.want, c.text)
			}
		})
	}
}

// TestFooterSources checks which footer copy is reported.
func TestFooterSources(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	base := randomLayer(rng, 3, 4<<20, 2<<20, 1).image()
	for _, c := range []struct {
		name string
		img  []byte
		want FooterSource
	}{
		{"end", base, FooterAtEnd},
		{"short", base[:len(base)-1], FooterShort},
		{"copy", append(append([]byte(nil), base[:len(base)-512]...), make([]byte, 512)...), FooterCopyAtZero},
	} {
		fsys := memFS{"/x.vhd": newMemFile("/x.vhd", c.img)}
		d, err := Open("/x.vhd", fsys.opts())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := d.Layers()[0].FooterSource; got != c.want {
			t.Errorf("%s: footer source %q, want %q", c.name, got, c.want)
		}
		d.Close()
	}
}
