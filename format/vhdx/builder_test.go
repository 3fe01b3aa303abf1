package vhdx_test

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"unicode/utf16"
)

// This file builds VHDX images byte by byte at the offsets [MS-VHDX] gives,
// independently of the package's code, and keeps a model of what each chain
// must read as. Block contents are a pattern of (layer, block, sector), so a
// misplaced sector is caught without keeping the data in memory.

const (
	tMiB = 1 << 20
	tKiB = 1 << 10

	tNotPresent = 0
	tUndefined  = 1
	tZero       = 2
	tUnmapped   = 3
	tFully      = 6
	tPartial    = 7
)

var tCRC = crc32.MakeTable(crc32.Castagnoli)

type tKV struct{ k, v string }

type tLayer struct {
	name       string // file name in the chain's directory
	id         byte   // pattern seed
	size, bs   int64
	lss, pss   int
	fixed      bool // LeaveBlockAllocated
	diff       bool
	states     map[int64]int    // payload block -> state; absent = defState
	defState   int              // NOT_PRESENT or ZERO
	bits       map[int64][]bool // PARTIALLY_PRESENT blocks: true = this file
	dataWrite  [16]byte
	locator    []tKV
	pendingLog bool  // put the first BAT page and two payload sectors in a pending, wrapped log
	logExtend  int64 // the log's LastFileOffset lies this far past the end of the file
	tornOld    bool  // break the CRC of the older header
	tornRT1    bool  // break the CRC of region table 1
	userItem   bool  // a user metadata item that reuses the FileParameters GUID
}

func (l *tLayer) state(b int64) int {
	if s, ok := l.states[b]; ok {
		return s
	}
	return l.defState
}

func (l *tLayer) ratio() int64   { return (1 << 23) * int64(l.lss) / l.bs }
func (l *tLayer) nblocks() int64 { return (l.size + l.bs - 1) / l.bs }

// pattern fills b (one logical sector) with the content of sector s of
// block blk of the layer.
func (l *tLayer) pattern(b []byte, blk, s int64) {
	v := uint64(l.id)<<56 ^ uint64(blk)<<32 ^ uint64(s)<<8 ^ 0x5A5A5A5A00000001
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], v^uint64(i)*0x9E3779B97F4A7C15)
	}
}

// expect returns what [off, off+n) of the chain (top first) reads as.
func expect(chain []*tLayer, off, n int64) []byte {
	out := make([]byte, n)
	ss := int64(chain[0].lss)
	sec := make([]byte, ss)
	for s := off / ss * ss; s < off+n; s += ss {
		clear(sec)
	sectorLoop:
		for _, l := range chain {
			if s >= l.size {
				break // past the parent's end: zeros
			}
			b, in := s/l.bs, (s%l.bs)/ss
			switch l.state(b) {
			case tFully:
				l.pattern(sec, b, in)
				break sectorLoop
			case tPartial:
				if l.bits[b][in] {
					l.pattern(sec, b, in)
					break sectorLoop
				}
			case tNotPresent:
			default:
				break sectorLoop // ZERO, UNDEFINED, UNMAPPED: zeros, no fall-through
			}
		}
		lo, hi := max(s, off), min(s+ss, off+n)
		copy(out[lo-off:hi-off], sec[lo-s:hi-s])
	}
	return out
}

func tUTF16(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// tGUIDText formats raw GUID bytes (mixed-endian) as text.
func tGUIDText(g [16]byte) string {
	return fmt.Sprintf("{%08x-%04x-%04x-%04x-%x}", binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), binary.BigEndian.Uint16(g[8:]), g[10:16])
}

func tGUID(s string) [16]byte {
	var g [16]byte
	var a uint32
	var b, c, d uint16
	var e uint64
	fmt.Sscanf(s, "%08x-%04x-%04x-%04x-%012x", &a, &b, &c, &d, &e)
	binary.LittleEndian.PutUint32(g[0:], a)
	binary.LittleEndian.PutUint16(g[4:], b)
	binary.LittleEndian.PutUint16(g[6:], c)
	binary.BigEndian.PutUint16(g[8:], d)
	for i := 0; i < 6; i++ {
		g[10+i] = byte(e >> (40 - 8*i))
	}
	return g
}

func putCRC(b []byte, at int) {
	binary.LittleEndian.PutUint32(b[at:], 0)
	binary.LittleEndian.PutUint32(b[at:], crc32.Checksum(b, tCRC))
}

// tImage is a file being built: pieces are written as they are made (later
// pieces over earlier ones), sparsely.
type tImage struct {
	f    *os.File
	size int64
	err  error
}

func (im *tImage) put(off int64, b []byte) {
	if _, err := im.f.WriteAt(b, off); err != nil && im.err == nil {
		im.err = err
	}
	im.size = max(im.size, off+int64(len(b)))
}

type tDesc struct {
	zero    bool
	fileOff int64
	zeroLen int64
	data    []byte // 4 KiB
}

// tLogEntry builds a log entry.
func tLogEntry(seq uint64, tail uint32, guid [16]byte, flushed, last int64, descs []tDesc) []byte {
	nd := 0
	for _, d := range descs {
		if !d.zero {
			nd++
		}
	}
	dsec := (64 + 32*len(descs) + 4095) / 4096
	e := make([]byte, (dsec+nd)*4096)
	copy(e, "loge")
	binary.LittleEndian.PutUint32(e[8:], uint32(len(e)))
	binary.LittleEndian.PutUint32(e[12:], tail)
	binary.LittleEndian.PutUint64(e[16:], seq)
	binary.LittleEndian.PutUint32(e[24:], uint32(len(descs)))
	copy(e[32:], guid[:])
	binary.LittleEndian.PutUint64(e[48:], uint64(flushed))
	binary.LittleEndian.PutUint64(e[56:], uint64(last))
	k := 0
	for i, d := range descs {
		dd := e[64+32*i:]
		binary.LittleEndian.PutUint64(dd[16:], uint64(d.fileOff))
		binary.LittleEndian.PutUint64(dd[24:], seq)
		if d.zero {
			copy(dd, "zero")
			binary.LittleEndian.PutUint64(dd[8:], uint64(d.zeroLen))
			continue
		}
		copy(dd, "desc")
		binary.LittleEndian.PutUint32(dd[4:], binary.LittleEndian.Uint32(d.data[4092:]))
		binary.LittleEndian.PutUint64(dd[8:], binary.LittleEndian.Uint64(d.data[0:]))
		s := e[(dsec+k)*4096:]
		copy(s[8:4092], d.data[8:4092])
		copy(s, "data")
		binary.LittleEndian.PutUint32(s[4:], uint32(seq>>32))
		binary.LittleEndian.PutUint32(s[4092:], uint32(seq))
		k++
	}
	putCRC(e, 4)
	return e
}

// build lays the layer out: log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB,
// then payload and sector bitmap blocks in a random order.
func (l *tLayer) build(rng *rand.Rand, path string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	im := &tImage{f: f}
	defer func() {
		if err == nil {
			err = im.err
		}
		if err == nil {
			err = f.Truncate(im.size)
		}
	}()
	const logOff, logLen, metaOff, batOff = 1 * tMiB, 1 * tMiB, 2 * tMiB, 3 * tMiB
	ratio, nb := l.ratio(), l.nblocks()
	nchunks := (nb + ratio - 1) / ratio
	entries := nb + (nb-1)/ratio
	if l.diff {
		entries = nchunks * (ratio + 1)
	}
	batLen := (entries*8 + tMiB - 1) / tMiB * tMiB
	bat := tBAT{}

	// Blocks to place: allocated payload blocks and the chunks' bitmaps.
	type piece struct {
		bitmap bool
		n      int64
	}
	var pieces []piece
	partialChunks := map[int64]bool{}
	for b := int64(0); b < nb; b++ {
		if s := l.state(b); s == tFully || s == tPartial {
			pieces = append(pieces, piece{false, b})
			if s == tPartial {
				partialChunks[b/ratio] = true
			}
		}
	}
	for c := int64(0); c < nchunks; c++ {
		if partialChunks[c] {
			pieces = append(pieces, piece{true, c})
		}
	}
	rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
	at := int64(batOff + batLen)
	blockAt := map[int64]int64{}
	bitmaps := map[int64][]byte{}
	bitmapAt := map[int64]int64{}
	ss := int64(l.lss)
	spb := l.bs / ss
	for _, p := range pieces {
		if p.bitmap {
			bat[p.n*(ratio+1)+ratio] = uint64(at) | tFully
			bitmaps[p.n] = make([]byte, tMiB)
			bitmapAt[p.n] = at
			at += tMiB
			continue
		}
		b := p.n
		bat[b+b/ratio] = uint64(at) | uint64(l.state(b))
		blockAt[b] = at
		need := min(l.bs, l.size-b*l.bs)
		// Write the block's sectors; a PARTIALLY_PRESENT block gets its
		// pattern only where the bit is set (the rest is garbage).
		buf := make([]byte, need)
		for s := int64(0); s < need/ss; s++ {
			if l.state(b) == tPartial && !l.bits[b][s] {
				for i := range buf[s*ss : (s+1)*ss] {
					buf[s*ss+int64(i)] = 0xEE
				}
				continue
			}
			l.pattern(buf[s*ss:(s+1)*ss], b, s)
		}
		im.put(at, buf)
		at += (need + tMiB - 1) / tMiB * tMiB
		if rng.IntN(4) == 0 {
			at += tMiB // a gap
		}
	}
	for b, bits := range l.bits {
		if l.state(b) != tPartial {
			continue
		}
		bm := bitmaps[b/ratio]
		base := (b % ratio) * spb
		for s, on := range bits {
			if on {
				k := base + int64(s)
				bm[k/8] |= 1 << (k % 8) // least significant bit first
			}
		}
	}
	for c, bm := range bitmaps {
		im.put(bitmapAt[c], bm)
	}
	for b := int64(0); b < nb; b++ {
		if _, ok := l.states[b]; !ok && l.defState == tNotPresent {
			continue
		}
		if s := l.state(b); s != tFully && s != tPartial && s != tNotPresent {
			bat[b+b/ratio] = uint64(s)
		}
	}
	fileEnd := max(at, int64(batOff+batLen))

	// Metadata region.
	meta := make([]byte, tMiB)
	copy(meta, "metadata")
	type item struct {
		guid  string
		data  []byte
		flags uint32
	}
	fp := make([]byte, 8)
	binary.LittleEndian.PutUint32(fp, uint32(l.bs))
	var fl uint32
	if l.fixed {
		fl |= 1
	}
	if l.diff {
		fl |= 2
	}
	binary.LittleEndian.PutUint32(fp[4:], fl)
	items := []item{
		{"CAA16737-FA36-4D43-B3B6-33F0AA44E76B", fp, 4},
		{"2FA54224-CD1B-4876-B211-5DBED83BF4B8", binary.LittleEndian.AppendUint64(nil, uint64(l.size)), 6},
		{"8141BF1D-A96F-4709-BA47-F233A8FAAB5F", binary.LittleEndian.AppendUint32(nil, uint32(l.lss)), 6},
		{"CDA348C7-445D-4471-9CC9-E9885251C556", binary.LittleEndian.AppendUint32(nil, uint32(l.pss)), 6},
		{"BECA12AB-B2E6-4523-93EF-C309E000C746", []byte("page83-0123456789")[:16], 6},
	}
	if l.userItem {
		bad := make([]byte, 8)
		binary.LittleEndian.PutUint32(bad, 12345) // an invalid block size: ignored, it is a user item
		items = append(items, item{"CAA16737-FA36-4D43-B3B6-33F0AA44E76B", bad, 1})
	}
	if l.diff {
		var kv, strs []byte
		hdrLen := 20 + 12*len(l.locator)
		for _, e := range l.locator {
			k, v := tUTF16(e.k), tUTF16(e.v)
			ko := hdrLen + len(strs)
			strs = append(strs, k...)
			vo := hdrLen + len(strs)
			strs = append(strs, v...)
			kv = binary.LittleEndian.AppendUint32(kv, uint32(ko))
			kv = binary.LittleEndian.AppendUint32(kv, uint32(vo))
			kv = binary.LittleEndian.AppendUint16(kv, uint16(len(k)))
			kv = binary.LittleEndian.AppendUint16(kv, uint16(len(v)))
		}
		lt := tGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
		loc := append(lt[:], 0, 0)
		loc = binary.LittleEndian.AppendUint16(loc, uint16(len(l.locator)))
		loc = append(append(loc, kv...), strs...)
		items = append(items, item{"A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", loc, 4})
	}
	rng.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	binary.LittleEndian.PutUint16(meta[10:], uint16(len(items)))
	pos := 64 * tKiB
	for i, it := range items {
		e := meta[32+32*i:]
		g := tGUID(it.guid)
		copy(e, g[:])
		binary.LittleEndian.PutUint32(e[16:], uint32(pos))
		binary.LittleEndian.PutUint32(e[20:], uint32(len(it.data)))
		binary.LittleEndian.PutUint32(e[24:], it.flags)
		copy(meta[pos:], it.data)
		pos += (len(it.data) + 7) / 8 * 8
	}
	im.put(metaOff, meta)

	// Headers, region tables, identifier.
	var logGUID [16]byte
	if l.pendingLog {
		logGUID = [16]byte{0x10, 0x6, 0x60, 0x1, 0x4, 9, 0x42, 0x42, 1, 2, 3, 4, 5, 6, 7, l.id}
	}
	id := make([]byte, 64*tKiB)
	copy(id, "vhdxfile")
	copy(id[8:], tUTF16("vhdmount test builder"))
	im.put(0, id)
	cur := 1 + rng.IntN(2) // which header is current
	for i := 1; i <= 2; i++ {
		h := make([]byte, 64*tKiB)
		copy(h, "head")
		seq := uint64(1000)
		if i == cur {
			seq++
		}
		binary.LittleEndian.PutUint64(h[8:], seq)
		h[16] = byte(i) // FileWriteGuid
		copy(h[32:], l.dataWrite[:])
		if i == cur {
			copy(h[48:], logGUID[:])
		}
		binary.LittleEndian.PutUint16(h[66:], 1)
		binary.LittleEndian.PutUint32(h[68:], logLen)
		binary.LittleEndian.PutUint64(h[72:], logOff)
		putCRC(h[:4096], 4)
		if l.tornOld && i != cur {
			h[0x100] ^= 0xFF
		}
		im.put(int64(i)*64*tKiB, h)
	}
	for i := 0; i < 2; i++ {
		r := make([]byte, 64*tKiB)
		copy(r, "regi")
		binary.LittleEndian.PutUint32(r[8:], 2)
		bg, mg := tGUID("2DC27766-F623-4200-9D64-115E9BFD4A08"), tGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
		copy(r[16:], bg[:])
		binary.LittleEndian.PutUint64(r[32:], batOff)
		binary.LittleEndian.PutUint32(r[40:], uint32(batLen))
		binary.LittleEndian.PutUint32(r[44:], 1)
		copy(r[48:], mg[:])
		binary.LittleEndian.PutUint64(r[64:], metaOff)
		binary.LittleEndian.PutUint32(r[72:], tMiB)
		binary.LittleEndian.PutUint32(r[76:], 1)
		putCRC(r, 4)
		if i == 0 && l.tornRT1 {
			r[0x1000] ^= 0xFF
		}
		im.put(int64(192+64*i)*tKiB, r)
	}

	if !l.pendingLog {
		bat.write(im, batOff, -1)
		im.size = max(im.size, fileEnd)
		return nil
	}
	// The pending log: the on-disk first BAT page is garbage (its true
	// content is in the log, after a zero descriptor over it); the first
	// 4 KiB of a FULLY_PRESENT block are garbage on disk and written twice
	// by the log (garbage, then the truth); an older entry of the same
	// sequence (before the tail) and an entry of another log would spoil a
	// further 4 KiB if they were replayed. The sequence wraps around the
	// end of the log.
	var xb int64 = -1
	for b := int64(0); b < nb; b++ {
		if l.state(b) == tFully && min(l.bs, l.size-b*l.bs) >= 8*tKiB {
			xb = b
			break
		}
	}
	if xb < 0 {
		return fmt.Errorf("pendingLog needs a FULLY_PRESENT block of at least 8 KiB")
	}
	x, y := blockAt[xb], blockAt[xb]+4*tKiB
	truth := expectBlock(l, xb, 0, 4*tKiB)
	junk := make([]byte, 4*tKiB)
	for i := range junk {
		junk[i] = 0xEE ^ byte(i)
	}
	junkBAT := make([]byte, 4*tKiB)
	for i := range junkBAT {
		junkBAT[i] = 0xFF
	}
	bat.write(im, batOff, 0)
	im.put(batOff, junkBAT)
	im.put(x, junk) // overrides the block's first 4 KiB
	im.size = max(im.size, fileEnd)
	fe := im.size
	le := fe + l.logExtend
	log := make([]byte, logLen)
	place := func(off int, e []byte) {
		for i := range e {
			log[(off+i)%len(log)] = e[i]
		}
	}
	other := logGUID
	other[0] ^= 0xFF
	place(64*tKiB, tLogEntry(77, 64*tKiB, other, fe, fe, []tDesc{{fileOff: y, data: junk}}))
	e1 := logLen - 4*tKiB
	place(e1-8*tKiB, tLogEntry(41, uint32(e1-8*tKiB), logGUID, fe, fe, []tDesc{{fileOff: y, data: junk}}))
	place(e1, tLogEntry(42, uint32(e1), logGUID, fe, fe, []tDesc{{zero: true, fileOff: batOff, zeroLen: 4 * tKiB}, {fileOff: x, data: junk}}))
	place(4*tKiB, tLogEntry(43, uint32(e1), logGUID, fe, le, []tDesc{{fileOff: batOff, data: bat.page(0)}, {fileOff: x, data: truth}}))
	im.put(logOff, log)
	return nil
}

// tBAT holds the non-zero BAT entries.
type tBAT map[int64]uint64

// page returns 4 KiB page p of the BAT.
func (t tBAT) page(p int64) []byte {
	b := make([]byte, 4*tKiB)
	for i := int64(0); i < 512; i++ {
		binary.LittleEndian.PutUint64(b[8*i:], t[p*512+i])
	}
	return b
}

// write writes the pages that hold non-zero entries, except page skip.
func (t tBAT) write(im *tImage, off, skip int64) {
	pages := map[int64]bool{}
	for i := range t {
		pages[i/512] = true
	}
	for p := range pages {
		if p != skip {
			im.put(off+p*4*tKiB, t.page(p))
		}
	}
}

// expectBlock returns bytes [from, from+n) of block b of the layer alone.
func expectBlock(l *tLayer, b, from, n int64) []byte {
	out := make([]byte, n)
	ss := int64(l.lss)
	sec := make([]byte, ss)
	for s := from / ss; s*ss < from+n; s++ {
		l.pattern(sec, b, s)
		copy(out[s*ss-from:], sec)
	}
	return out
}

// randomLayer makes a layer with random block states, including blocks on
// both sides of chunk boundaries and the last block.
func randomLayer(rng *rand.Rand, name string, id byte, size, bs int64, lss int, diff bool) *tLayer {
	l := &tLayer{name: name, id: id, size: size, bs: bs, lss: lss, pss: 4096, diff: diff,
		states: map[int64]int{}, bits: map[int64][]bool{}, userItem: rng.IntN(2) == 0}
	if rng.IntN(2) == 0 {
		l.defState = tZero
	}
	if diff {
		l.defState = tNotPresent
	}
	for i := range l.dataWrite {
		l.dataWrite[i] = byte(rng.IntN(256))
	}
	nb, ratio := l.nblocks(), l.ratio()
	cands := []int64{0, 1, nb - 1, nb - 2}
	for c := ratio; c < nb; c += ratio {
		cands = append(cands, c-1, c, c+1)
	}
	for i := 0; i < 6; i++ {
		cands = append(cands, rng.Int64N(nb))
	}
	spb := bs / int64(lss)
	for _, b := range cands {
		if b < 0 || b >= nb {
			continue
		}
		states := []int{tFully, tFully, tZero, tUndefined, tUnmapped, tNotPresent}
		if diff {
			states = append(states, tPartial, tPartial, tPartial)
		}
		s := states[rng.IntN(len(states))]
		l.states[b] = s
		if s != tPartial {
			continue
		}
		bits := make([]bool, spb)
		switch rng.IntN(4) {
		case 0: // random bits
			for i := range bits {
				bits[i] = rng.IntN(2) == 0
			}
		case 1: // runs
			on := false
			for i := range bits {
				if rng.IntN(50) == 0 {
					on = !on
				}
				bits[i] = on
			}
		case 2: // single sectors
			for k := 0; k < 5; k++ {
				bits[rng.Int64N(spb)] = true
			}
		default: // all but one
			for i := range bits {
				bits[i] = true
			}
			bits[rng.Int64N(spb)] = false
		}
		l.bits[b] = bits
	}
	return l
}

// writeChain writes the layers into dir; the parent of layer i is layer i+1.
func writeChain(rng *rand.Rand, dir string, layers []*tLayer) error {
	for _, l := range layers {
		if err := l.build(rng, filepath.Join(dir, l.name)); err != nil {
			return err
		}
	}
	return nil
}

// link makes child's locator name parent in one of the ways Windows does.
func link(rng *rand.Rand, child, parent *tLayer) {
	up := rng.IntN(2) == 0
	lk := tGUIDText(parent.dataWrite)
	if up {
		lk = upper(lk)
	}
	kvs := []tKV{{"parent_linkage", lk}}
	switch rng.IntN(4) {
	case 0:
		kvs = append(kvs, tKV{"relative_path", `.\` + parent.name})
	case 1:
		kvs = append(kvs, tKV{"absolute_win32_path", `\\?\C:\Hyper-V\` + parent.name})
	case 2:
		kvs = append(kvs, tKV{"volume_path", `\\?\Volume{0eba351e-5634-46d6-a8cf-4ddc2d6ac0b9}\x\` + parent.name})
	default:
		kvs = append(kvs, tKV{"relative_path", `missing\` + parent.name},
			tKV{"absolute_win32_path", `C:\Users\Public\` + parent.name})
	}
	kvs = append(kvs, tKV{"parent_linkage2", "{00000000-0000-0000-0000-000000000000}"})
	rng.Shuffle(len(kvs), func(i, j int) { kvs[i], kvs[j] = kvs[j], kvs[i] })
	child.locator = kvs
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 32
		}
	}
	return string(b)
}
