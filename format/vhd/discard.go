package vhd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// Puncher is implemented by a File that can deallocate a range of itself
// (the range then reads as zeros and the file keeps its size), as
// fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE) does. An *os.File is
// punched with fallocate directly. PunchHole returns an error wrapping
// errors.ErrUnsupported when the file or its filesystem cannot do it.
type Puncher interface {
	PunchHole(off, n int64) error
}

// errNoPunch says the file or its filesystem cannot punch holes.
var errNoPunch = fmt.Errorf("punching holes: %w", errors.ErrUnsupported)

// punchHole deallocates [off, off+n) of f, keeping its size.
func punchHole(f lay.File, off, n int64) error {
	if n <= 0 {
		return nil
	}
	switch pf := f.(type) {
	case Puncher:
		return pf.PunchHole(off, n)
	case *os.File:
		return punchOS(pf, off, n)
	}
	return errNoPunch
}

// punchFile punches [off, off+n) of the layer's file; a file that cannot
// be punched keeps the bytes, which are then ignored (the caller has made
// sure nothing reads them) — only the space is not given back.
func (l *Layer) punchFile(off, n int64) error {
	err := punchHole(l.f, off, n)
	if err == nil || errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	return fmt.Errorf("vhd: %s: punching a hole (%d bytes at 0x%x): %w", l.path, n, off, err)
}

// Discard makes [off, off+n) of the virtual disk read as zeros in this
// layer and gives back the space it can (see format's Disk.Discard for the
// policy and its crash safety). below reads the chain below this layer (as
// for WriteAt); belowHasData reports whether a layer below stores data in a
// range, at block granularity: where one does, zeros are written here, since
// clearing bits would let the parent's data show through.
func (l *Layer) Discard(off, n int64, below io.ReaderAt, belowHasData func(off, n int64) bool) error {
	if l.readOnly {
		return ErrReadOnly
	}
	if off < 0 || n < 0 || off > l.size || n > l.size-off {
		return fmt.Errorf("%w: discard of %d bytes at %d on a disk of %d bytes", ErrOutOfRange, n, off, l.size)
	}
	if l.fixed() {
		err := l.zeroFile(off, n)
		if l.onFree != nil {
			l.onFree(off, 0) // the file's holes changed
		}
		return err
	}
	for n > 0 {
		blk, in := off/l.blockSize, off%l.blockSize
		m := min(n, l.blockSize-in)
		if err := l.discardBlock(blk, in, m, off, below, belowHasData); err != nil {
			return err
		}
		off, n = off+m, n-m
	}
	return nil
}

// zeroFile zeros [off, off+n) of the layer's file, punching the whole
// pages in it (writing zeros when the file cannot be punched).
func (l *Layer) zeroFile(off, n int64) error {
	a, b := roundUp(off, 4096), (off+n)&^4095
	if b <= a {
		return l.writeZeros(off, n)
	}
	if err := l.writeZeros(off, a-off); err != nil {
		return err
	}
	if err := l.writeZeros(b, off+n-b); err != nil {
		return err
	}
	err := punchHole(l.f, a, b-a)
	if errors.Is(err, errors.ErrUnsupported) {
		return l.writeZeros(a, b-a)
	}
	if err != nil {
		return fmt.Errorf("vhd: %s: punching a hole (%d bytes at 0x%x): %w", l.path, b-a, a, err)
	}
	return nil
}

// writeZeros writes n zero bytes at file offset off.
func (l *Layer) writeZeros(off, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroBlock)))
		if err := l.writeFile(zeroBlock[:k], off, "data"); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// discardBlock discards m bytes at byte in of block blk (virtual offset off).
func (l *Layer) discardBlock(blk, in, m, off int64, below io.ReaderAt, belowHasData func(off, n int64) bool) error {
	lock := &l.blockLocks[blk%int64(len(l.blockLocks))]
	lock.Lock()
	defer lock.Unlock()
	e := l.entry(blk)
	if belowHasData(off, m) {
		// Zeros must be stored here, or the parent would show through.
		return l.writeBlockLocked(blk, in, make([]byte, m), off, below)
	}
	if e == unallocated {
		return nil // reads zeros already
	}
	start, bm, err := l.block(blk, e)
	if err != nil {
		return err
	}
	data := start + l.bitmapSize
	s0, s1 := roundUp(in, SectorSize)/SectorSize, (in+m)/SectorSize // whole sectors
	dynamic := l.footer.DiskType == TypeDynamic
	if dynamic {
		// Zeros in the file too, not only cleared bits: readers that ignore
		// a dynamic disk's bitmaps (qemu) then read zeros as well.
		if err := l.zeroFile(data+in, m); err != nil {
			return err
		}
	} else {
		// Partly covered sectors present here get zeros in the covered part.
		edges := [][2]int64{{in, min(s0*SectorSize, in+m)}, {max(s1*SectorSize, in), in + m}}
		if s0 > s1 { // inside one sector
			edges = edges[:1]
		}
		for _, r := range edges {
			if r[1] > r[0] && bm.has(r[0]/SectorSize) {
				if err := l.writeFile(zeroBlock[:r[1]-r[0]], data+r[0], "data"); err != nil {
					return err
				}
			}
		}
	}
	if s0 >= s1 {
		return nil
	}
	nsec := l.sectorsIn(blk)
	bits := bm.expand(nsec)
	changed := false
	for s := s0; s < s1; s++ {
		if bits[s/8]&(0x80>>(s%8)) != 0 {
			bits[s/8] &^= 0x80 >> (s % 8)
			changed = true
		}
	}
	nbm := newBitmap(bits, nsec)
	if nbm.empty {
		return l.unallocate(blk, start)
	}
	if !changed {
		return nil
	}
	if err := l.writeFile(bits, start, fmt.Sprintf("sector bitmap of block %d", blk)); err != nil {
		return err
	}
	l.bitmaps[blk].Store(nbm)
	if dynamic {
		return nil // punched above
	}
	// The cleared sectors' data is ignored now; give back whole pages of it.
	pa, pb := roundUp(data+s0*SectorSize, 4096), (data+s1*SectorSize)&^4095
	if pb > pa {
		return l.punchFile(pa, pb-pa)
	}
	return nil
}

// unallocate returns block blk, whose bitmap is at start and shows no
// sector present (so reads of it fall through already), to unallocated:
// the BAT entry first, then the block's space is punched.
func (l *Layer) unallocate(blk, start int64) error {
	var ent [4]byte
	binary.BigEndian.PutUint32(ent[:], unallocated)
	if err := l.writeFile(ent[:], int64(l.hdr.TableOffset)+4*blk, fmt.Sprintf("BAT entry %d", blk)); err != nil {
		return err
	}
	atomic.StoreUint32(&l.bat[blk], unallocated)
	l.bitmaps[blk].Store(nil)
	if l.onFree != nil {
		l.onFree(blk*l.blockSize, l.blockSize)
	}
	need := min(l.blockSize, l.size-blk*l.blockSize)
	return l.punchFile(start, l.bitmapSize+need)
}
