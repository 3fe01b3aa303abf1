package format

import (
	"encoding/binary"
	"math/rand/v2"
	"unicode/utf16"
)

// This file builds VHD images byte by byte at the offsets the specification
// gives, independently of the package's own structs and Create, and keeps a
// flat model of what each chain must read as.

type tBlock struct {
	bits []bool // one per sector of the block; true = present in this file
	data []byte // blockSize bytes
}

type tLoc struct {
	code string
	data []byte
}

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

type tLayer struct {
	typ        int   // 2, 3, 4
	size       int64 // virtual size
	blockSize  int64 // dynamic/differencing
	uuid       [16]byte
	parentUUID [16]byte
	parentName string // header name, UTF-16BE
	w2ru       string // W2ru locator, UTF-16LE; empty = none
	locators   []tLoc // further locators, written after W2ru
	nameLE     bool   // write the header name UTF-16LE (seen from Windows)
	blocks     map[int64]*tBlock
	fixedData  []byte // fixed disks
	batPad     byte   // padding byte after the BAT (0xFF or 0x00)
}

func tChecksum(b []byte) uint32 {
	var s uint32
	for _, c := range b {
		s += uint32(c)
	}
	return ^s
}

func tFooter(l *tLayer, dataOffset uint64) []byte {
	b := make([]byte, 512)
	copy(b, "conectix")
	binary.BigEndian.PutUint32(b[8:], 2)
	binary.BigEndian.PutUint32(b[12:], 0x10000)
	binary.BigEndian.PutUint64(b[16:], dataOffset)
	copy(b[28:], "test")
	binary.BigEndian.PutUint64(b[40:], uint64(l.size))
	binary.BigEndian.PutUint64(b[48:], uint64(l.size))
	binary.BigEndian.PutUint32(b[56:], 0x01000411)
	binary.BigEndian.PutUint32(b[60:], uint32(l.typ))
	copy(b[68:], l.uuid[:])
	binary.BigEndian.PutUint32(b[64:], tChecksum(b))
	return b
}

// image returns the file bytes of the layer.
func (l *tLayer) image() []byte {
	if l.typ == 2 {
		out := append([]byte(nil), l.fixedData...)
		return append(out, tFooter(l, ^uint64(0))...)
	}
	n := (l.size + l.blockSize - 1) / l.blockSize
	batOff := int64(1536)
	batLen := (n*4 + 511) / 512 * 512
	locOff := batOff + batLen
	locs := l.locators
	if l.w2ru != "" {
		locs = append([]tLoc{{"W2ru", utf16le(l.w2ru)}}, locs...)
	}
	pos := locOff
	for _, lc := range locs {
		pos += int64(len(lc.data)+511) / 512 * 512
	}
	bmSize := ((l.blockSize/512+7)/8 + 511) / 512 * 512
	img := make([]byte, pos)
	copy(img, tFooter(l, 512))
	h := img[512:1536]
	copy(h, "cxsparse")
	binary.BigEndian.PutUint64(h[8:], ^uint64(0))
	binary.BigEndian.PutUint64(h[16:], uint64(batOff))
	binary.BigEndian.PutUint32(h[24:], 0x10000)
	binary.BigEndian.PutUint32(h[28:], uint32(n))
	binary.BigEndian.PutUint32(h[32:], uint32(l.blockSize))
	copy(h[40:], l.parentUUID[:])
	for i, u := range utf16.Encode([]rune(l.parentName)) {
		if l.nameLE {
			binary.LittleEndian.PutUint16(h[64+2*i:], u)
		} else {
			binary.BigEndian.PutUint16(h[64+2*i:], u)
		}
	}
	at := locOff
	for i, lc := range locs {
		e := h[576+24*i:]
		space := int64(len(lc.data)+511) / 512 * 512
		copy(e, lc.code)
		binary.BigEndian.PutUint32(e[4:], uint32(space)) // bytes, as Windows writes
		binary.BigEndian.PutUint32(e[8:], uint32(len(lc.data)))
		binary.BigEndian.PutUint64(e[16:], uint64(at))
		copy(img[at:], lc.data)
		at += space
	}
	binary.BigEndian.PutUint32(h[36:], tChecksum(h)) // before img grows away from h
	for i := batOff; i < batOff+batLen; i++ {
		img[i] = l.batPad
	}
	for b := int64(0); b < n; b++ {
		blk, ok := l.blocks[b]
		if !ok {
			binary.BigEndian.PutUint32(img[batOff+4*b:], 0xFFFFFFFF)
			continue
		}
		binary.BigEndian.PutUint32(img[batOff+4*b:], uint32(len(img)/512))
		bm := make([]byte, bmSize)
		for s, on := range blk.bits {
			if on {
				bm[s/8] |= 0x80 >> (s % 8)
			}
		}
		img = append(img, bm...)
		img = append(img, blk.data...)
	}
	return append(img, tFooter(l, 512)...)
}

// flat returns what the chain (top first) must read as: per sector, the
// first layer whose block is allocated with the bit set; zeros past a
// layer's end or where none has it.
func flat(chain []*tLayer) []byte {
	top := chain[0]
	out := make([]byte, top.size)
	for s := int64(0); s < top.size/512; s++ {
		off := s * 512
		for _, l := range chain {
			if off >= l.size {
				break // a child larger than its parent reads zeros there
			}
			if l.typ == 2 {
				copy(out[off:off+512], l.fixedData[off:])
				break
			}
			b, in := off/l.blockSize, off%l.blockSize
			blk, ok := l.blocks[b]
			if ok && blk.bits[in/512] {
				copy(out[off:off+512], blk.data[in:])
				break
			}
			if ok && l.typ == 3 {
				break // dynamic: clear bit reads zeros
			}
		}
	}
	return out
}

// randomLayer makes a layer with random blocks and bitmaps: some blocks
// full, some empty, some with random runs and single-sector patterns.
func randomLayer(rng *rand.Rand, typ int, size, blockSize int64, id byte) *tLayer {
	l := &tLayer{typ: typ, size: size, blockSize: blockSize, blocks: map[int64]*tBlock{}, batPad: 0xFF}
	l.uuid[0], l.uuid[15] = id, 0x42
	if typ == 2 {
		l.fixedData = make([]byte, size)
		fillRandom(rng, l.fixedData)
		return l
	}
	n := (size + blockSize - 1) / blockSize
	nsec := blockSize / 512
	for b := int64(0); b < n; b++ {
		if rng.IntN(3) == 0 {
			continue
		}
		blk := &tBlock{bits: make([]bool, nsec), data: make([]byte, blockSize)}
		fillRandom(rng, blk.data)
		switch rng.IntN(4) {
		case 0: // full
			for i := range blk.bits {
				blk.bits[i] = true
			}
		case 1: // empty bitmap
		case 2: // random bits
			for i := range blk.bits {
				blk.bits[i] = rng.IntN(2) == 0
			}
		default: // runs
			on := false
			for i := range blk.bits {
				if rng.IntN(9) == 0 {
					on = !on
				}
				blk.bits[i] = on
			}
		}
		l.blocks[b] = blk
	}
	return l
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
}

// chainFS builds the files of a chain (top first) named layer0.vhd (top),
// layer1.vhd, …, each child pointing at the next by W2ru and header name.
func chainFS(chain []*tLayer) memFS {
	fsys := memFS{}
	for i, l := range chain {
		if i+1 < len(chain) {
			l.parentUUID = chain[i+1].uuid
			name := "layer" + string(rune('0'+i+1)) + ".vhd"
			l.parentName = name
			l.w2ru = `.\` + name
		}
		path := "/img/layer" + string(rune('0'+i)) + ".vhd"
		fsys[path] = newMemFile(path, l.image())
	}
	return fsys
}
