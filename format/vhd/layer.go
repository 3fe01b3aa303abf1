package vhd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	lay "github.com/vhdmount/vhdmount/format/layer"
)

// FooterSource says which copy of the footer an image was opened with.
type FooterSource string

// Footer sources, in the order they are tried.
const (
	FooterAtEnd      FooterSource = "end of file"
	FooterShort      FooterSource = "511-byte footer at end of file"
	FooterCopyAtZero FooterSource = "copy at offset 0"
)

// bitmap is the cached sector bitmap of one allocated block. full and empty
// never change once published. A write into a block whose bitmap has words
// sets its bits in place, with atomic ORs, under the block's lock and after
// the sectors they cover are written; bits are never cleared in place (a
// discard publishes a new bitmap). Readers load words atomically.
type bitmap struct {
	full  bool     // every sector of the block is present in this file
	empty bool     // no sector is present
	words []uint32 // nil when full or empty; see bitWord
}

// bitWord returns the word of a bitmap's words that holds sector s's bit,
// and the bit. The words hold the on-disk bytes (MSB first: sector 0 is
// 0x80 of byte 0) four to a word, big-endian: byte j is bits 31-8*(j%4)
// down of word j/4, so sector s is bit 31-s%32 of word s/32.
func bitWord(s int64) (int64, uint32) { return s / 32, 1 << (31 - s%32) }

// Layer is one VHD file: fixed, dynamic or differencing. It implements
// lay.Layer, lay.Extenter, lay.Writer and lay.AllocNotifier; the methods of
// the operations that rewrite its structures (Discard, Resize, Relink,
// Compact, commit's emptying) are its own.
type Layer struct {
	path     string
	f        lay.File
	readOnly bool
	fileSize int64 // size of the file when opened

	footer    Footer
	footerRaw [footerSize]byte
	footerSrc FooterSource
	footerOff int64 // where the footer in use sits

	size int64 // CurrentSize

	// dynamic and differencing only
	hdr          *DynamicHeader
	hdrOff       int64
	blockSize    int64
	bitmapSize   int64
	nblocks      int64    // BAT entries that cover the virtual size
	bat          []uint32 // atomic loads; a store publishes a new block under its block lock
	bitmaps      []atomic.Pointer[bitmap]
	meta         []interval // metadata areas no block may overlap
	batmapOff    int64      // blktap batmap, 0 when absent
	batmapSize   int64
	batmapHdrOff int64

	// write state
	mu         sync.Mutex   // serializes file growth (block allocation)
	dataEnd    int64        // guarded by mu: end of the last block or metadata area
	dataLimit  atomic.Int64 // where the footer now sits: blocks must end before it
	blockLocks [64]sync.Mutex
	bmBufs     [64]*[SectorSize]byte // bmBufs[i]: scratch for bitmap writes, guarded by blockLocks[i]

	// onAlloc, set by the chain, hears of each block allocated (its virtual range)
	onAlloc func(off, n int64)
	// onFree, set by the chain, hears of each block a discard unallocated
	onFree func(off, n int64)

	parentName string
}

// interval is a metadata area. end bounds what the area is known to hold (it is
// checked against blocks); reserve bounds what it claims (new blocks go after it).
type interval struct {
	start, end, reserve int64
	what                string
}

func (l *Layer) fixed() bool { return l.footer.DiskType == TypeFixed }

// Options control how Open reads a VHD file.
type Options struct {
	// ReadOnly: the layer is not written. Otherwise a damaged structure is
	// refused (never write into a damaged image).
	ReadOnly bool
	// IgnoreChecksums accepts footers and headers whose checksum is wrong
	// (for a read-only open that lets Check report them).
	IgnoreChecksums bool
}

// Open parses the VHD file f at path (absolute). It does not look for a
// parent: Parent says where to, MatchParent checks a candidate. The layer
// owns f from then on: Close closes it.
func Open(path string, f lay.File, o Options) (*Layer, error) {
	readOnly := o.ReadOnly
	opts := &o
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vhd: %s: %w", path, err)
	}
	l := &Layer{path: path, f: f, readOnly: readOnly, fileSize: fi.Size()}
	if err := l.readFooter(opts.IgnoreChecksums); err != nil {
		return nil, err
	}
	l.size = int64(l.footer.CurrentSize)
	l.dataLimit.Store(l.footerOff)
	if l.fixed() {
		if l.footerOff < l.size {
			return nil, formatErr(path, 0x30+l.footerOff, "footer CurrentSize", ErrCorrupt,
				"fixed disk of %d bytes, but only %d bytes of data precede the footer", l.size, l.footerOff)
		}
		return l, nil
	}
	if err := l.readHeader(opts.IgnoreChecksums); err != nil {
		return nil, err
	}
	if !readOnly {
		// Never write into a damaged image: a new block or BAT entry could
		// land on what another entry or a metadata area claims.
		if err := l.checkWritable(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *Layer) readAtFull(b []byte, off int64, what string) error {
	n, err := l.f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return formatErr(l.path, off, what, ErrCorrupt, "file ends after %d of %d bytes", n, len(b))
	}
	return fmt.Errorf("vhd: %s: reading %s (%d bytes at 0x%x): %w", l.path, what, len(b), off, err)
}

// readFooter implements footer discovery: end of file, 511-byte short
// footer, then the copy at offset 0 (dynamic and differencing only).
func (l *Layer) readFooter(ignoreChecksum bool) error {
	if l.fileSize < footerSize-1 {
		return formatErr(l.path, 0, "footer", ErrNotVHD, "file is only %d bytes", l.fileSize)
	}
	var firstErr error
	try := func(off int64, n int, src FooterSource) bool {
		var b [footerSize]byte
		if err := l.readAtFull(b[:n], off, "footer"); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return false
		}
		f, err := parseFooter(l.path, b[:], off, ignoreChecksum)
		if err != nil {
			// A checksum or field error beats "no cookie" as the reason given.
			if firstErr == nil || errors.Is(firstErr, ErrNotVHD) {
				firstErr = err
			}
			return false
		}
		if src == FooterCopyAtZero && f.DiskType == TypeFixed {
			return false
		}
		l.footer, l.footerRaw, l.footerSrc, l.footerOff = *f, b, src, off
		return true
	}
	if l.fileSize >= footerSize && try(l.fileSize-footerSize, footerSize, FooterAtEnd) {
		return nil
	}
	if l.fileSize%SectorSize == SectorSize-1 && try(l.fileSize-(footerSize-1), footerSize-1, FooterShort) {
		return nil
	}
	if l.fileSize >= footerSize && try(0, footerSize, FooterCopyAtZero) {
		// The footer's place is the end of the file, where it is missing or bad;
		// the data area ends there.
		l.footerOff = l.fileSize
		return nil
	}
	return firstErr
}

func (l *Layer) readHeader(ignoreChecksum bool) error {
	p := l.path
	do := l.footer.DataOffset
	if do < footerSize || do > uint64(l.footerOff) || do+headerSize > uint64(l.footerOff) {
		return formatErr(p, l.footerOff+0x10, "footer DataOffset", ErrCorrupt, "0x%x is not inside the file (%d bytes)", do, l.fileSize)
	}
	l.hdrOff = int64(do)
	var b [headerSize]byte
	if err := l.readAtFull(b[:], l.hdrOff, "dynamic header"); err != nil {
		return err
	}
	h, err := parseHeader(p, b[:], l.hdrOff, ignoreChecksum)
	if err != nil {
		return err
	}
	l.hdr = h
	l.blockSize = int64(h.BlockSize)
	l.bitmapSize = roundUp((l.blockSize/SectorSize+7)/8, SectorSize)
	l.nblocks = (l.size + l.blockSize - 1) / l.blockSize
	if int64(h.MaxTableEntries) < l.nblocks {
		return formatErr(p, l.hdrOff+0x1C, "dynamic header MaxTableEntries", ErrCorrupt,
			"%d entries of %d bytes cannot cover the virtual size %d (need %d)", h.MaxTableEntries, l.blockSize, l.size, l.nblocks)
	}
	if l.footer.DiskType == TypeDifferencing && h.ParentUniqueID == (uuid.UUID{}) {
		return formatErr(p, l.hdrOff+0x28, "dynamic header ParentUniqueID", ErrCorrupt, "differencing disk without a parent unique id")
	}
	if l.footer.DiskType == TypeDifferencing {
		l.parentName = decodeUTF16(h.ParentUnicodeName[:], binary.BigEndian)
	}
	// The BAT: only the entries that cover the virtual size are read.
	to := h.TableOffset
	batBytes := l.nblocks * 4
	if to < footerSize || to > uint64(l.footerOff) || int64(to)+batBytes > l.footerOff {
		return formatErr(p, l.hdrOff+0x10, "dynamic header TableOffset", ErrCorrupt,
			"BAT of %d entries at 0x%x does not fit in the file (%d bytes)", l.nblocks, to, l.fileSize)
	}
	// The whole table must be in the file, not only the entries read: a
	// table running past the end is refused, as qemu-img and 7-Zip do.
	if tableEnd := int64(to) + int64(h.MaxTableEntries)*4; tableEnd > l.fileSize {
		return formatErr(p, l.hdrOff+0x1C, "dynamic header MaxTableEntries", ErrCorrupt,
			"BAT of %d entries at 0x%x ends at 0x%x, past the end of the file (%d bytes)", h.MaxTableEntries, to, tableEnd, l.fileSize)
	}
	raw := make([]byte, batBytes)
	if err := l.readAtFull(raw, int64(to), "BAT"); err != nil {
		return err
	}
	l.bat = make([]uint32, l.nblocks)
	for i := range l.bat {
		l.bat[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	l.bitmaps = make([]atomic.Pointer[bitmap], l.nblocks)

	// Metadata areas; new blocks go after all of them.
	fullBat := min(roundUp(int64(h.MaxTableEntries)*4, SectorSize), l.footerOff-int64(to))
	l.meta = []interval{
		{0, footerSize, footerSize, "footer copy"},
		{l.hdrOff, l.hdrOff + headerSize, l.hdrOff + headerSize, "dynamic header"},
		{int64(to), int64(to) + batBytes, int64(to) + fullBat, "BAT"},
	}
	l.readBatmap(int64(to) + fullBat)
	var claimEnd int64
	for i := range h.Locators {
		loc := &h.Locators[i]
		if !loc.used() {
			continue
		}
		space := max(loc.dataSpaceBytes(), int64(loc.DataLength))
		if loc.DataOffset > uint64(l.fileSize) {
			continue // reported by Check; never trusted beyond the file
		}
		lo := int64(loc.DataOffset)
		if space > l.fileSize {
			// Not trusted for reads, but new blocks still go after it.
			claimEnd = max(claimEnd, lo+space)
			continue
		}
		l.meta = append(l.meta, interval{lo, lo + int64(loc.DataLength), lo + space, "parent locator " + fourCC(loc.Code)})
	}
	l.dataEnd = claimEnd
	for _, m := range l.meta {
		l.dataEnd = max(l.dataEnd, m.reserve)
	}
	// New blocks go past everything an entry claims, inside the file or not.
	for _, e := range l.bat {
		if e == unallocated {
			continue
		}
		l.dataEnd = max(l.dataEnd, int64(e)*SectorSize+l.bitmapSize+l.blockSize)
	}
	return nil
}

// readBatmap looks for a blktap "tdbatmap" header right after the BAT.
func (l *Layer) readBatmap(off int64) {
	if off+SectorSize > l.footerOff {
		return
	}
	var b [SectorSize]byte
	if l.readAtFull(b[:], off, "batmap header") != nil || string(b[:8]) != "tdbatmap" {
		return
	}
	mapOff := int64(binary.BigEndian.Uint64(b[8:]))
	mapSize := int64(binary.BigEndian.Uint32(b[16:])) * SectorSize
	l.meta = append(l.meta, interval{off, off + SectorSize, off + SectorSize, "batmap header"})
	if mapOff >= footerSize && mapSize > 0 && mapSize <= l.fileSize && mapOff+mapSize <= l.footerOff {
		l.batmapOff, l.batmapSize, l.batmapHdrOff = mapOff, mapSize, off
		l.meta = append(l.meta, interval{mapOff, mapOff + mapSize, mapOff + mapSize, "batmap"})
	}
}

// blockOffset validates BAT entry e of block blk and returns the absolute
// offset of the block's bitmap. Entries that would read past the end of the
// data area or over metadata are errors, never zeros.
func (l *Layer) blockOffset(blk int64, e uint32) (int64, error) {
	start := int64(e) * SectorSize
	need := l.blockSize
	if rest := l.size - blk*l.blockSize; rest < need {
		need = rest // the last block only needs to hold the sectors the disk has
	}
	end := start + l.bitmapSize + need
	if limit := l.dataLimit.Load(); end > limit {
		return 0, formatErr(l.path, int64(l.hdr.TableOffset)+4*blk, fmt.Sprintf("BAT entry %d", blk), ErrCorrupt,
			"block at 0x%x ends at 0x%x, past the end of the data area 0x%x", start, end, limit)
	}
	for _, m := range l.meta {
		if start < m.end && end > m.start {
			return 0, formatErr(l.path, int64(l.hdr.TableOffset)+4*blk, fmt.Sprintf("BAT entry %d", blk), ErrCorrupt,
				"block at 0x%x-0x%x overlaps the %s at 0x%x-0x%x", start, end, m.what, m.start, m.end)
		}
	}
	return start, nil
}

// block validates allocated block blk's BAT entry e and returns the offset
// of its bitmap and the bitmap itself.
func (l *Layer) block(blk int64, e uint32) (int64, *bitmap, error) {
	start, err := l.blockOffset(blk, e)
	if err != nil {
		return 0, nil, err
	}
	bm, err := l.loadBitmap(blk, start)
	if err != nil {
		return 0, nil, err
	}
	return start, bm, nil
}

// loadBitmap returns the cached bitmap of allocated block blk, reading it on
// first use.
func (l *Layer) loadBitmap(blk int64, start int64) (*bitmap, error) {
	if bm := l.bitmaps[blk].Load(); bm != nil {
		return bm, nil
	}
	nsec := l.blockSize / SectorSize
	if rest := l.size - blk*l.blockSize; rest < l.blockSize {
		nsec = rest / SectorSize
	}
	raw := make([]byte, (nsec+7)/8)
	if err := l.readAtFull(raw, start, fmt.Sprintf("sector bitmap of block %d", blk)); err != nil {
		return nil, err
	}
	bm := newBitmap(raw, nsec)
	l.bitmaps[blk].CompareAndSwap(nil, bm)
	return l.bitmaps[blk].Load(), nil
}

// newBitmap classifies the first nsec bits of raw (the on-disk bytes).
func newBitmap(raw []byte, nsec int64) *bitmap {
	full, empty := true, true
	whole := nsec / 8
	for _, c := range raw[:whole] {
		if c != 0xFF {
			full = false
		}
		if c != 0 {
			empty = false
		}
	}
	if rem := nsec % 8; rem != 0 {
		mask := byte(0xFF << (8 - rem))
		c := raw[whole] & mask
		if c != mask {
			full = false
		}
		if c != 0 {
			empty = false
		}
	}
	if full || empty {
		return &bitmap{full: full, empty: empty}
	}
	words := make([]uint32, (nsec+31)/32)
	for j, c := range raw[:(nsec+7)/8] {
		words[j/4] |= uint32(c) << (24 - 8*(j%4))
	}
	if rem := nsec % 32; rem != 0 { // bits past the block's sectors stay clear
		words[len(words)-1] &^= 1<<(32-rem) - 1
	}
	return &bitmap{words: words}
}

// has reports whether sector s of the block is present in this file.
func (b *bitmap) has(s int64) bool {
	if b.full {
		return true
	}
	if b.empty {
		return false
	}
	w, bit := bitWord(s)
	return atomic.LoadUint32(&b.words[w])&bit != 0
}

// run returns the end (exclusive) of the run of sectors starting at s, up to
// limit, whose presence equals that of s.
func (b *bitmap) run(s, limit int64) int64 {
	if b.full || b.empty {
		return limit
	}
	v := b.has(s)
	e := s + 1
	for e < limit {
		// Skip whole words when possible.
		if e%32 == 0 && e+32 <= limit {
			c := atomic.LoadUint32(&b.words[e/32])
			if (v && c == ^uint32(0)) || (!v && c == 0) {
				e += 32
				continue
			}
		}
		if b.has(e) != v {
			break
		}
		e++
	}
	return e
}

// bytesTo writes the on-disk bytes [lo, hi) of the bitmap into out, which
// holds hi-lo bytes.
func (b *bitmap) bytesTo(out []byte, lo, hi int64) {
	switch {
	case b.full:
		for i := range out[:hi-lo] {
			out[i] = 0xFF
		}
	case b.empty:
		clear(out[:hi-lo])
	default:
		for j := lo; j < hi; j++ {
			out[j-lo] = byte(atomic.LoadUint32(&b.words[j/4]) >> (24 - 8*(j%4)))
		}
	}
}

func (l *Layer) entry(blk int64) uint32 { return atomic.LoadUint32(&l.bat[blk]) }

func roundUp(n, m int64) int64 { return (n + m - 1) / m * m }
