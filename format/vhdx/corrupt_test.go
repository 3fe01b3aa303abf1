package vhdx_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// smallLayer is a 64 MiB dynamic (or differencing) layer with a few blocks
// of each state, for tests that edit the bytes of a whole image.
func smallLayer(rng *rand.Rand, diff bool) *tLayer {
	l := &tLayer{name: "s.vhdx", id: 7, size: 64 << 20, bs: 1 << 20, lss: 512, pss: 4096, diff: diff,
		states: map[int64]int{0: tFully, 1: tZero, 5: tFully, 63: tFully}, bits: map[int64][]bool{}}
	for i := range l.dataWrite {
		l.dataWrite[i] = byte(i + 1)
	}
	if diff {
		l.states[7] = tPartial
		bits := make([]bool, 2048)
		for i := range bits {
			bits[i] = i%3 == 0
		}
		l.bits[7] = bits
		l.locator = []tKV{{"parent_linkage", "{01020304-0506-0708-090a-0b0c0d0e0f10}"}, {"relative_path", `.\p.vhdx`}}
	}
	return l
}

func buildBytes(t testing.TB, rng *rand.Rand, l *tLayer) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), l.name)
	if err := l.build(rng, p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixCRC(b []byte, off, size int) {
	s := b[off : off+size]
	binary.LittleEndian.PutUint32(s[4:], 0)
	binary.LittleEndian.PutUint32(s[4:], crc32.Checksum(s, tCRC))
}

// curHeader returns the offset of the current header of a built image.
func curHeader(b []byte) int {
	if binary.LittleEndian.Uint64(b[64<<10+8:]) > binary.LittleEndian.Uint64(b[128<<10+8:]) {
		return 64 << 10
	}
	return 128 << 10
}

// metaEntry returns the offset of the metadata table entry of guid.
func metaEntry(b []byte, guid string) int {
	g := tGUID(guid)
	for i := 0; i < 16; i++ {
		e := 2<<20 + 32 + 32*i
		if bytes.Equal(b[e:e+16], g[:]) && binary.LittleEndian.Uint32(b[e+24:])&1 == 0 {
			return e
		}
	}
	panic("no metadata entry " + guid)
}

func metaItem(b []byte, guid string) int {
	return 2<<20 + int(binary.LittleEndian.Uint32(b[metaEntry(b, guid)+16:]))
}

const (
	gFileParams = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B"
	gSize       = "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
	gLSS        = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F"
	gLocator    = "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"
)

// TestCorruption breaks one field at a time and checks the error: the
// sentinel, the field named, the file named, and no panic.
func TestCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	base := buildBytes(t, rng, smallLayer(rng, false))
	diff := buildBytes(t, rng, smallLayer(rng, true))
	hdr := func(b []byte) int { return curHeader(b) }
	cases := []struct {
		name  string
		diff  bool
		edit  func(b []byte) []byte
		want  error
		field string
		atMap bool // the error shows when the disk is read, not at open
	}{
		{"identifier", false, func(b []byte) []byte { b[7] = 'g'; return b }, layer.ErrNotImage, "file identifier", false},
		{"short file", false, func(b []byte) []byte { return b[:512<<10] }, layer.ErrCorrupt, "file size", false},
		{"both header signatures", false, func(b []byte) []byte { b[64<<10] = 'x'; b[128<<10] = 'x'; return b }, layer.ErrCorrupt, "header 1 Signature", false},
		{"both header checksums", false, func(b []byte) []byte { b[64<<10+200]++; b[128<<10+200]++; return b }, layer.ErrChecksum, "header 1 Checksum", false},
		{"same sequence, different headers", false, func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[64<<10+8:], 9)
			binary.LittleEndian.PutUint64(b[128<<10+8:], 9)
			fixCRC(b, 64<<10, 4096)
			fixCRC(b, 128<<10, 4096)
			return b
		}, layer.ErrCorrupt, "SequenceNumber", false},
		{"header version", false, func(b []byte) []byte { h := hdr(b); b[h+66] = 2; fixCRC(b, h, 4096); return b }, layer.ErrUnsupported, "Version", false},
		{"log offset", false, func(b []byte) []byte { h := hdr(b); b[h+72] = 1; fixCRC(b, h, 4096); return b }, layer.ErrCorrupt, "LogLength/LogOffset", false},
		{"log guid without entries", false, func(b []byte) []byte { h := hdr(b); b[h+48] = 1; fixCRC(b, h, 4096); return b }, layer.ErrCorrupt, "log", false},
		{"log version", false, func(b []byte) []byte { h := hdr(b); b[h+48] = 1; b[h+64] = 1; fixCRC(b, h, 4096); return b }, layer.ErrUnsupported, "LogVersion", false},
		{"both region tables", false, func(b []byte) []byte { b[192<<10+100]++; b[256<<10+100]++; return b }, layer.ErrChecksum, "region table 1 Checksum", false},
		{"unknown required region", false, func(b []byte) []byte {
			for _, rt := range []int{192 << 10, 256 << 10} {
				binary.LittleEndian.PutUint32(b[rt+8:], 3)
				e := b[rt+16+64:]
				copy(e, "0123456789abcdef")
				binary.LittleEndian.PutUint64(e[16:], 20<<20)
				binary.LittleEndian.PutUint32(e[24:], 1<<20)
				binary.LittleEndian.PutUint32(e[28:], 1)
				fixCRC(b, rt, 64<<10)
			}
			return b
		}, layer.ErrUnsupported, "region table 1 entry", false},
		{"BAT region too short", false, func(b []byte) []byte {
			rt := 192 << 10
			binary.LittleEndian.PutUint32(b[rt+16+24:], 0) // BAT Length
			fixCRC(b, rt, 64<<10)
			return b
		}, layer.ErrCorrupt, "region table 1 BAT region", false},
		{"region past the end", false, func(b []byte) []byte {
			rt := 192 << 10
			binary.LittleEndian.PutUint64(b[rt+16+16:], 1<<40)
			fixCRC(b, rt, 64<<10)
			return b
		}, layer.ErrCorrupt, "BAT region FileOffset", false},
		{"regions overlap", false, func(b []byte) []byte {
			rt := 192 << 10
			binary.LittleEndian.PutUint64(b[rt+48+16:], 3<<20) // metadata at the BAT
			fixCRC(b, rt, 64<<10)
			return b
		}, layer.ErrCorrupt, "overlaps", false},
		{"metadata signature", false, func(b []byte) []byte { b[2<<20] = 'M'; return b }, layer.ErrCorrupt, "metadata table Signature", false},
		{"metadata entry count", false, func(b []byte) []byte { binary.LittleEndian.PutUint16(b[2<<20+10:], 3000); return b }, layer.ErrCorrupt, "metadata table EntryCount", false},
		{"missing size item", false, func(b []byte) []byte { e := metaEntry(b, gSize); b[e]++; b[e+24] = 0; return b }, layer.ErrCorrupt, "VirtualDiskSize", false},
		{"unknown required item", false, func(b []byte) []byte { e := metaEntry(b, gSize); b[e]++; b[e+24] = 4; return b }, layer.ErrUnsupported, "unknown required item", false},
		{"duplicate item", false, func(b []byte) []byte {
			e := metaEntry(b, gSize)
			n := int(binary.LittleEndian.Uint16(b[2<<20+10:]))
			copy(b[2<<20+32+32*n:], b[e:e+32])
			binary.LittleEndian.PutUint16(b[2<<20+10:], uint16(n+1))
			return b
		}, layer.ErrCorrupt, "listed twice", false},
		{"item outside the region", false, func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[metaEntry(b, gSize)+16:], 1<<20-4)
			return b
		}, layer.ErrCorrupt, "metadata table entry Offset", false},
		{"block size", false, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[metaItem(b, gFileParams):], 3<<20); return b }, layer.ErrCorrupt, "BlockSize", false},
		{"logical sector size", false, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[metaItem(b, gLSS):], 1024); return b }, layer.ErrCorrupt, "LogicalSectorSize", false},
		{"size zero", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[metaItem(b, gSize):], 0); return b }, layer.ErrCorrupt, "VirtualDiskSize", false},
		{"size odd", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[metaItem(b, gSize):], 1000); return b }, layer.ErrCorrupt, "VirtualDiskSize", false},
		{"size over 64 TiB", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[metaItem(b, gSize):], 65<<40); return b }, layer.ErrCorrupt, "VirtualDiskSize", false},
		{"block past the end", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[3<<20:], 6|1<<30); return b }, layer.ErrCorrupt, "BAT entry 0", true},
		{"block over the metadata", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[3<<20:], 6|2<<20); return b }, layer.ErrCorrupt, "BAT entry 0", true},
		{"block in the header section", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[3<<20+8:], 6); return b }, layer.ErrCorrupt, "BAT entry 1", true},
		{"invalid block state", false, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[3<<20+16:], 4); return b }, layer.ErrCorrupt, "BAT entry 2", true},
		{"partial block without a parent", false, func(b []byte) []byte { b[3<<20] |= 7; return b }, layer.ErrCorrupt, "BAT entry 0", true},
		{"partial block without a bitmap", true, func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[3<<20+8*4096:], 0) // chunk 0's bitmap entry
			return b
		}, layer.ErrCorrupt, "BAT entry 4096", true},
		{"no parent locator", true, func(b []byte) []byte { e := metaEntry(b, gLocator); b[e]++; b[e+24] = 0; return b }, layer.ErrCorrupt, "ParentLocator", false},
		{"locator type", true, func(b []byte) []byte { b[metaItem(b, gLocator)]++; return b }, layer.ErrUnsupported, "LocatorType", false},
		{"locator key outside", true, func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[metaItem(b, gLocator)+20:], 60000)
			return b
		}, layer.ErrCorrupt, "parent locator entry key", false},
		{"linkage not a GUID", true, func(b []byte) []byte {
			i := bytes.Index(b[metaItem(b, gLocator):], tUTF16("{0102"))
			b[metaItem(b, gLocator)+i+2] = 'x'
			return b
		}, layer.ErrCorrupt, "parent_linkage", false},
		{"no linkage", true, func(b []byte) []byte {
			i := bytes.Index(b[metaItem(b, gLocator):], tUTF16("parent_linkage"))
			b[metaItem(b, gLocator)+i] = 'P'
			return b
		}, layer.ErrCorrupt, "no parent_linkage", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := base
			if c.diff {
				src = diff
			}
			img := c.edit(append([]byte(nil), src...))
			path := "/corrupt/" + strings.ReplaceAll(c.name, " ", "-") + ".vhdx"
			l, err := vhdx.Open(path, newMemFile(img), vhdx.Options{ReadOnly: true})
			if c.atMap {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				_, err = l.Map(nil, 0, l.Size())
				if err == nil {
					t.Fatal("Map read the whole disk without an error")
				}
				if probs := l.Check(); len(probs) == 0 {
					t.Errorf("Check found nothing")
				}
			}
			if err == nil {
				t.Fatal("opened")
			}
			if !errors.Is(err, c.want) {
				t.Errorf("error %q; want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %q does not name %q", err, c.field)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			var fe *layer.FormatError
			if errors.As(err, &fe) && fe.Off <= 0 && c.name != "identifier" && c.name != "short file" {
				t.Errorf("error %q has no offset", err)
			}
		})
	}
}

// memFile is an in-memory layer.File.
type memFile struct {
	b []byte
}

func newMemFile(b []byte) *memFile { return &memFile{b: b} }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, ioEOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, ioEOF
	}
	return n, nil
}
func (m *memFile) WriteAt(p []byte, off int64) (int, error) { return 0, errors.New("read-only") }
func (m *memFile) Stat() (os.FileInfo, error)               { return memInfo{int64(len(m.b))}, nil }
func (m *memFile) Truncate(int64) error                     { return errors.New("read-only") }
func (m *memFile) Sync() error                              { return nil }
func (m *memFile) Close() error                             { return nil }
