package format

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

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
