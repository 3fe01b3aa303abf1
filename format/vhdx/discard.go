package vhdx

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vhdmount/vhdmount/format/layer"
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

// punch deallocates [off, off+n) of the file, keeping its size. With zeros,
// a file that cannot be punched gets zeros written there instead; without,
// it keeps its bytes (the caller made sure nothing reads them).
func (l *Layer) punch(off, n int64, zeros bool, what thing) error {
	if n <= 0 {
		return nil
	}
	var err error
	switch pf := l.f.(type) {
	case Puncher:
		err = pf.PunchHole(off, n)
	case *os.File:
		err = punchOS(pf, off, n)
	default:
		err = errNoPunch
	}
	if errors.Is(err, errors.ErrUnsupported) {
		if zeros {
			return l.writeZeros(off, n, what)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("vhdx: %s: punching a hole in %s (%d bytes at 0x%x): %w", l.path, what, n, off, err)
	}
	return nil
}

// writeZeros writes n zero bytes at file offset off.
func (l *Layer) writeZeros(off, n int64, what thing) error {
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		if err := l.writeFile(zeroBuf[:k], off, what); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// zeroFile makes [off, off+n) of the file read zeros: the whole 4 KiB pages
// in it are punched, zeros are written at the edges.
func (l *Layer) zeroFile(off, n int64, what thing) error {
	a, b := (off+4095)&^4095, (off+n)&^4095
	if b <= a {
		return l.writeZeros(off, n, what)
	}
	if err := l.writeZeros(off, a-off, what); err != nil {
		return err
	}
	if err := l.writeZeros(b, off+n-b, what); err != nil {
		return err
	}
	return l.punch(a, b-a, true, what)
}

// Discard makes [off, off+n) of the virtual disk read as zeros in this
// layer and gives back the space it can. below reads the chain below this
// layer (as for WriteAt); belowHasData reports whether a layer below stores
// data in a range (at block granularity).
//
// A whole payload block in the range, in a file that does not leave its
// blocks allocated (LeaveBlockAllocated, which a differencing file ignores): its BAT entry becomes NOT_PRESENT (zeros in a file
// without a parent; the parent's view in a child, used where belowHasData
// says the parent holds nothing) or, in a child over a parent holding data,
// ZERO (reads zeros, never falls through); then the block's range of the
// file is punched (the space is not reused: new blocks still go at the end
// of the file), then the free callback is told. Sector bitmap blocks are
// left alone.
//
// Part of a block: a FULLY_PRESENT block (and every block of a file that
// leaves its blocks allocated, such as a fixed file) is zeroed in place,
// its whole 4 KiB pages punched and zeros written at the edges. In a
// PARTIALLY_PRESENT block the range's whole pages are punched, zeros are
// written over the rest (partly covered sectors keep their other bytes,
// from this file or from below), then the bits of the covered sectors are
// set. A NOT_PRESENT block of a child over a parent holding data gets zeros
// written as WriteAt would (a new block whose untouched pages stay holes).
// Blocks reading zeros already (NOT_PRESENT with nothing below, ZERO,
// UNMAPPED, UNDEFINED) are left as they are.
//
// Crash safety: a block is unpublished (its BAT entry written in one 8-byte
// write) before its space is punched; in a PARTIALLY_PRESENT block the
// data is zeroed before bits are set. A crash at any point leaves a file
// that opens, checks clean, and shows each sector of the range either as
// it was or as zeros.
func (l *Layer) Discard(off, n int64, below io.ReaderAt, belowHasData func(off, n int64) bool) error {
	if l.w == nil {
		return fmt.Errorf("%w: %s", ErrReadOnly, l.path)
	}
	if off < 0 || n < 0 || off > l.size || n > l.size-off {
		return fmt.Errorf("vhdx: %s: discard of %d bytes at %d outside the %d-byte disk", l.path, n, off, l.size)
	}
	if n == 0 {
		return nil
	}
	if err := l.firstWrite(); err != nil {
		return err
	}
	for n > 0 {
		b, in := off/l.blockSize, off%l.blockSize
		m := min(n, l.blockSize-in)
		lk := &l.w.locks[b%int64(len(l.w.locks))]
		lk.Lock()
		err := l.discardBlock(b, in, m, below, belowHasData)
		lk.Unlock()
		if err != nil {
			return err
		}
		off, n = off+m, n-m
	}
	return nil
}

// discardBlock discards m bytes at byte in of block b, with the block's
// lock held.
func (l *Layer) discardBlock(b, in, m int64, below io.ReaderAt, belowHasData func(off, n int64) bool) error {
	idx := b + b/l.chunkRatio
	e, err := l.batEntry(idx)
	if err != nil {
		return err
	}
	vo := b*l.blockSize + in
	need := min(l.blockSize, l.size-b*l.blockSize)
	whole := in == 0 && m == need
	what := thing{"payload block", b}
	// LeaveBlockAllocated (a fixed file) keeps every block; the spec has a
	// differencing file ignore it.
	keep := l.leaveAlloc && !l.hasParent
	st := e & 7
	switch st {
	case stFullyPresent, stPartiallyPresent:
		fo, err := l.blockFileOff(idx, e, need, what)
		if err != nil {
			return err
		}
		switch {
		case whole && !keep:
			return l.dropBlock(b, idx, fo, need, l.hasParent && belowHasData(vo, m))
		case st == stFullyPresent:
			return l.zeroFile(fo+in, m, what)
		default:
			return l.zeroPartial(b, fo, in, m, below)
		}
	case stNotPresent:
		if !l.hasParent || !belowHasData(vo, m) {
			return nil // reads zeros already
		}
		if whole && !keep {
			if err := l.setBAT(idx, stZero); err != nil {
				return err
			}
			l.notifyFree(b, 0) // the layer's extents changed; nothing was allocated
			return nil
		}
		return l.writeBlock(b, in, make([]byte, m), below)
	case stZero, stUnmapped, stUndefined:
		return nil
	}
	return ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt, "payload block %d has the invalid state %d", b, st)
}

// dropBlock unallocates block b (BAT entry idx) stored at fo (need bytes):
// its BAT entry becomes ZERO (zero) or NOT_PRESENT, then its space is
// punched, then the free callback is told.
func (l *Layer) dropBlock(b, idx, fo, need int64, zero bool) error {
	st := uint64(stNotPresent)
	if zero {
		st = stZero
	}
	if err := l.setBAT(idx, st); err != nil {
		return err
	}
	if err := l.punch(fo, need, false, thing{"payload block", b}); err != nil {
		return err
	}
	l.notifyFree(b, need)
	return nil
}

// notifyFree tells the free callback that block b (n bytes of it from its
// start; 0 when only its state changed) is allocated no more.
func (l *Layer) notifyFree(b, n int64) {
	l.w.mu.Lock()
	fn := l.w.free
	l.w.mu.Unlock()
	if fn != nil {
		fn(b*l.blockSize, n)
	}
}

// zeroPartial zeros m bytes at byte in of PARTIALLY_PRESENT block b stored
// at fo: the whole pages of the range are punched and the rest written
// (edge sectors this file does not hold filled from below), then the bits
// of the sectors covered are set.
func (l *Layer) zeroPartial(b, fo, in, m int64, below io.ReaderAt) error {
	old, err := l.blockBitmap(b)
	if err != nil {
		return err
	}
	buf, at, err := l.widen(b, fo, in, make([]byte, m), func(s int64) bool { return bit(old, s) }, below)
	if err != nil {
		return err
	}
	what := thing{"payload block", b}
	end := at + int64(len(buf))
	// The whole pages of the discarded range (fo is MiB-aligned: they are
	// pages of the file too) are all zeros in buf; the edges may keep bytes.
	pa, pb := (in+4095)&^4095, (in+m)&^4095
	if pb <= pa {
		if err := l.writeFile(buf, fo+at, what); err != nil {
			return err
		}
	} else {
		if err := l.writeFile(buf[:pa-at], fo+at, what); err != nil {
			return err
		}
		if err := l.writeFile(buf[pb-at:], fo+pb, what); err != nil {
			return err
		}
		if err := l.punch(fo+pa, pb-pa, true, what); err != nil {
			return err
		}
	}
	ss := int64(l.lss)
	return l.setBits(b, old, at/ss, end/ss)
}
