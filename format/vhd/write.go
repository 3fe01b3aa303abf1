package vhd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

var (
	_ lay.Writer        = (*Layer)(nil)
	_ lay.AllocNotifier = (*Layer)(nil)
)

// WriteAt writes p at virtual offset off into this layer (lay.Writer). A
// fixed disk is written in place. In a dynamic or differencing disk, a
// block is allocated on the first write into it; written sectors get their
// bitmap bits set; a write covering part of a sector first fills the rest
// of that sector with what the layer showed there (its own sector when
// present, else what below shows). All-zero writes into unallocated blocks
// of a dynamic disk (no parent) allocate nothing, since those blocks read
// as zeros already.
//
// Crash safety: a new block's space is reserved and the footer moved past it
// first, so the file always ends with a valid footer; then the block's data
// and bitmap are written; then the BAT entry that publishes it. Bitmap bits
// are set only after the sectors they cover are written. After a crash the
// image therefore opens as it was before the interrupted write, possibly with
// an unreferenced block: space no BAT entry points at, which is harmless and
// not reported as a problem.
//
// Concurrent WriteAt calls to different blocks proceed in parallel; calls to
// the same block are serialized.
func (l *Layer) WriteAt(p []byte, off int64, below io.ReaderAt) (int, error) {
	if l.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || off > l.size || int64(len(p)) > l.size-off {
		return 0, fmt.Errorf("%w: write of %d bytes at %d on a disk of %d bytes", ErrOutOfRange, len(p), off, l.size)
	}
	if l.fixed() {
		n, err := l.f.WriteAt(p, off)
		if err != nil {
			err = fmt.Errorf("vhd: %s: write %d bytes at 0x%x: %w", l.path, len(p), off, err)
		}
		if l.onAlloc != nil {
			l.onAlloc(off, 0) // the write may have filled a hole of the file
		}
		return n, err
	}
	written := 0
	for len(p) > 0 {
		blk, in := off/l.blockSize, off%l.blockSize
		n := min(int64(len(p)), l.blockSize-in)
		if err := l.writeBlock(blk, in, p[:n], off, below); err != nil {
			return written, err
		}
		written += int(n)
		p, off = p[n:], off+n
	}
	return written, nil
}

// Sync flushes the layer's file to stable storage (lay.Writer).
func (l *Layer) Sync() error { return l.sync() }

// NotifyAlloc sets the functions that hear of each block allocated and
// unallocated (lay.AllocNotifier).
func (l *Layer) NotifyAlloc(alloc, free func(off, n int64)) {
	l.onAlloc, l.onFree = alloc, free
}

// writeBlock writes p at byte in of block blk (virtual offset off).
func (l *Layer) writeBlock(blk, in int64, p []byte, off int64, below io.ReaderAt) error {
	lock := &l.blockLocks[blk%int64(len(l.blockLocks))]
	lock.Lock()
	defer lock.Unlock()
	return l.writeBlockLocked(blk, in, p, off, below)
}

// writeBlockLocked is writeBlock with the block's lock held.
func (l *Layer) writeBlockLocked(blk, in int64, p []byte, off int64, below io.ReaderAt) error {
	e := l.entry(blk)
	if e == unallocated {
		if l.footer.DiskType == TypeDynamic && isZero(p) {
			return nil
		}
		return l.allocate(blk, in, p, off, below)
	}
	start, bm, err := l.block(blk, e)
	if err != nil {
		return err
	}
	data := start + l.bitmapSize
	if bm.full {
		return l.writeFile(p, data+in, "data")
	}
	s0, s1 := in/SectorSize, (in+int64(len(p))+SectorSize-1)/SectorSize
	buf, bufIn := p, in
	if (in%SectorSize != 0 && !bm.has(s0)) || ((in+int64(len(p)))%SectorSize != 0 && !bm.has(s1-1)) {
		if buf, bufIn, err = l.sectorAligned(p, in, off, below, data, bm); err != nil {
			return err
		}
	}
	if err := l.writeFile(buf, data+bufIn, "data"); err != nil {
		return err
	}
	// Set the bits of every sector the write covered (edge sectors whose bit
	// was set stay set; edge sectors that were clear were filled above).
	return l.setBits(blk, start, bm, s0, s1)
}

// setBits marks sectors [s0, s1) of allocated block blk (bitmap at file
// offset start, cached as bm) present, after their data was written, with
// the block's lock held: in memory first (readers may then read the new
// data), then on disk, writing only the sectors of the bitmap that hold
// changed bits. A bitmap that has no words yet (it was empty) gets them
// once; later writes set bits in place and allocate nothing.
func (l *Layer) setBits(blk, start int64, bm *bitmap, s0, s1 int64) error {
	if bm.full {
		return nil
	}
	nsec := l.sectorsIn(blk)
	if bm.words == nil { // empty: publish a bitmap with words
		nbm := &bitmap{words: make([]uint32, (nsec+31)/32)}
		l.bitmaps[blk].Store(nbm)
		bm = nbm
	}
	changed := false
	for s := s0; s < s1; {
		w := s / 32
		e := min(s1, (w+1)*32)
		// bits s%32 .. e%32 (exclusive) from the top of word w
		mask := ^uint32(0) >> (s % 32)
		if e%32 != 0 {
			mask &^= ^uint32(0) >> (e % 32)
		}
		if atomic.LoadUint32(&bm.words[w])&mask != mask {
			atomic.OrUint32(&bm.words[w], mask)
			changed = true
		}
		s = e
	}
	if !changed {
		return nil
	}
	// The bitmap sectors that hold bytes s0/8 to (s1-1)/8, clipped to the
	// bytes that hold the block's sectors.
	nbytes := (nsec + 7) / 8
	for lo := s0 / 8 &^ (SectorSize - 1); lo <= (s1-1)/8; lo += SectorSize {
		hi := min(lo+SectorSize, nbytes)
		buf := l.bitmapBuf(blk)
		bm.bytesTo(buf[:], lo, hi)
		if _, err := l.f.WriteAt(buf[:hi-lo], start+lo); err != nil {
			return fmt.Errorf("vhd: %s: writing sector bitmap of block %d (%d bytes at 0x%x): %w", l.path, blk, hi-lo, start+lo, err)
		}
	}
	return nil
}

// bitmapBuf returns the scratch sector for writing block blk's bitmap,
// one per block lock stripe; the caller holds the block's lock.
func (l *Layer) bitmapBuf(blk int64) *[SectorSize]byte {
	i := blk % int64(len(l.blockLocks))
	if l.bmBufs[i] == nil {
		l.bmBufs[i] = new([SectorSize]byte)
	}
	return l.bmBufs[i]
}

// allocate appends block blk to the file with p written at byte in.
func (l *Layer) allocate(blk, in int64, p []byte, off int64, below io.ReaderAt) error {
	buf, bufIn := p, in
	if in%SectorSize != 0 || (in+int64(len(p)))%SectorSize != 0 {
		var err error
		if buf, bufIn, err = l.sectorAligned(p, in, off, below, 0, nil); err != nil {
			return err
		}
	}
	// Reserve the space and move the footer past it.
	l.mu.Lock()
	pos := roundUp(max(l.dataEnd, l.dataLimit.Load())+l.bitmapSize, 4096) - l.bitmapSize // data 4 KiB aligned
	end := pos + l.bitmapSize + l.blockSize
	if pos/SectorSize >= int64(unallocated) {
		l.mu.Unlock()
		return fmt.Errorf("%w: %s would grow past the 2 TiB a BAT entry can address", ErrUnsupported, l.path)
	}
	// pos is at or past the footer, so the footer always moves.
	if err := l.writeFile(l.footerRaw[:], end, "footer"); err != nil {
		l.mu.Unlock()
		return err
	}
	l.dataLimit.Store(end)
	l.dataEnd = end
	l.mu.Unlock()

	nsec := l.sectorsIn(blk)
	// The whole bitmap area, so its padding holds zeros rather than whatever
	// was there (the old footer, for one).
	area := make([]byte, l.bitmapSize)
	bits := area[:(nsec+7)/8]
	for s := bufIn / SectorSize; s < (bufIn+int64(len(buf)))/SectorSize; s++ {
		bits[s/8] |= 0x80 >> (s % 8)
	}
	if err := l.writeFile(buf, pos+l.bitmapSize+bufIn, "data"); err != nil {
		return err
	}
	if err := l.writeFile(area, pos, fmt.Sprintf("sector bitmap of block %d", blk)); err != nil {
		return err
	}
	var ent [4]byte
	binary.BigEndian.PutUint32(ent[:], uint32(pos/SectorSize))
	if err := l.writeFile(ent[:], int64(l.hdr.TableOffset)+4*blk, fmt.Sprintf("BAT entry %d", blk)); err != nil {
		return err
	}
	l.bitmaps[blk].Store(newBitmap(bits, nsec))
	atomic.StoreUint32(&l.bat[blk], uint32(pos/SectorSize))
	if l.onAlloc != nil {
		l.onAlloc(blk*l.blockSize, l.blockSize)
	}
	return nil
}

// sectorAligned widens a write of p at byte in of a block (virtual offset
// off) to whole sectors, filling the edges with what the layer shows there
// now: the sector stored in this file when bm has its bit set (the block's
// data at file offset data), else what below shows.
func (l *Layer) sectorAligned(p []byte, in, off int64, below io.ReaderAt, data int64, bm *bitmap) ([]byte, int64, error) {
	a := in &^ (SectorSize - 1)
	b := roundUp(in+int64(len(p)), SectorSize)
	buf := make([]byte, b-a)
	head := off - (in - a)
	edge := func(q []byte, inBlock, virt int64) error {
		if bm != nil && bm.has(inBlock/SectorSize) {
			return l.readData(q, data+inBlock)
		}
		n, err := below.ReadAt(q, virt)
		if n == len(q) {
			return nil
		}
		if err == nil || err == io.EOF {
			err = fmt.Errorf("vhd: %s: reading the chain below: %d of %d bytes at %d", l.path, n, len(q), virt)
		}
		return err
	}
	if err := edge(buf[:SectorSize], a, head); err != nil {
		return nil, 0, err
	}
	if len(buf) > SectorSize {
		if err := edge(buf[len(buf)-SectorSize:], b-SectorSize, head+int64(len(buf))-SectorSize); err != nil {
			return nil, 0, err
		}
	}
	copy(buf[in-a:], p)
	return buf, a, nil
}

// sectorsIn returns the number of sectors of block blk inside the disk.
func (l *Layer) sectorsIn(blk int64) int64 {
	return min(l.blockSize, l.size-blk*l.blockSize) / SectorSize
}

// expand returns a fresh copy of the bitmap's on-disk bytes for nsec sectors.
func (b *bitmap) expand(nsec int64) []byte {
	out := make([]byte, (nsec+7)/8)
	b.bytesTo(out, 0, int64(len(out)))
	return out
}

func (l *Layer) writeFile(p []byte, off int64, what string) error {
	if _, err := l.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("vhd: %s: writing %s (%d bytes at 0x%x): %w", l.path, what, len(p), off, err)
	}
	return nil
}

var zeroBlock = make([]byte, 1<<20)

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroBlock))
		if !bytes.Equal(p[:n], zeroBlock[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
