package vhdx

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/vhdmount/vhdmount/format/layer"
)

// Resize changes the virtual size of the file to size (a non-zero multiple
// of the logical sector size, at most MaxSize) and returns the old size;
// shrink allows a smaller size, refused anyway while a byte past the new end
// that this file stores is not zero. below is the size of the chain below a
// differencing file (ignored without a parent): its new blocks wholly past
// it are made ZERO rather than NOT_PRESENT, so that readers that look for a
// child's NOT_PRESENT blocks in the parent even past its end (7-Zip) read
// zeros there. Resize must not run concurrently with other calls on the
// layer, and does not call the NotifyAlloc callbacks (the blocks it
// releases lie past the new end).
//
// No log is used; the order of the steps makes every crash leave a file
// that opens, checks clean and reads as the old or the new disk:
//
//  1. The session's header update (new FileWriteGuid); a region table 2
//     that differs from table 1 (a resize cut between its two region table
//     writes) is made a copy of it. DataWriteGuid is
//     kept, except when a differencing file shrinks: growing adds sectors
//     reading zeros and shrinking drops only sectors this file stores as
//     zeros, so no sector its children read changes, but what a
//     differencing file cut off may have shown from its parent.
//  2. Growing: the last block's bytes past the old end are made to read
//     zeros (data zeroed; in a PARTIALLY_PRESENT block their bits cleared
//     too): nothing reads them yet. A last block stored short of a whole
//     block with something else after it is refused (vhd convert instead).
//  3. Growing: the BAT entries of the new blocks are written (NOT_PRESENT,
//     or ZERO past the end of a child's parent; a fixed file's new blocks
//     FULLY_PRESENT, in space the file is extended over first), in place
//     when the BAT region is large enough; else into a new BAT region past
//     everything (a copy of the old entries and the new ones), synced, then
//     region table 1, synced, then region table 2, synced, each written as
//     the one sector that changes (the BAT entry and the checksum), which a
//     power cut cannot tear. Between the two, both tables are valid and
//     every reader uses table 1. Nothing reads the new entries before the
//     size changes. Synced.
//  4. The VirtualDiskSize metadata item (8 bytes in one sector, written in
//     place), synced.
//  5. Shrinking: the blocks past the new end become NOT_PRESENT, synced, and
//     their space is punched; the file is truncated after the last
//     structure it still holds.
func (l *Layer) Resize(size int64, shrink bool, below int64) (old int64, err error) {
	old = l.size
	if l.w == nil {
		return old, fmt.Errorf("%w: %s", ErrReadOnly, l.path)
	}
	if size <= 0 || size%int64(l.lss) != 0 || size > MaxSize {
		return old, fmt.Errorf("vhdx: %s: size %d is not a positive multiple of the %d-byte logical sector up to %d (64 TiB)", l.path, size, l.lss, int64(MaxSize))
	}
	switch {
	case size == old:
		return old, nil
	case size < old && !shrink:
		return old, fmt.Errorf("vhdx: %s: %d bytes is smaller than the disk (%d bytes); shrinking must be asked for", l.path, size, old)
	}
	for i := range l.w.locks {
		l.w.locks[i].Lock()
		defer l.w.locks[i].Unlock()
	}
	var sizeItem *MetadataItem
	for i := range l.metaItems {
		if it := &l.metaItems[i]; !it.IsUser && it.ID == guidVirtualDiskSize {
			sizeItem = it
		}
	}
	if sizeItem == nil || sizeItem.Length < 8 {
		return old, ferr(l.path, l.meta.Off, "metadata table", layer.ErrCorrupt, "no VirtualDiskSize item")
	}
	if size < old {
		if err := l.checkTailZero(size, old); err != nil {
			return old, err
		}
	}
	// A fixed file's new blocks get their space first, before anything is
	// written: a filesystem without room refuses with the file as it was.
	var fixedAt int64
	if size > old && l.leaveAlloc && !l.hasParent {
		l.w.mu.Lock()
		fixedAt, err = l.reserveFixed(size)
		l.w.mu.Unlock()
		if err != nil {
			return old, err
		}
	}
	if err := l.sessionHeader(size < old && l.hasParent); err != nil {
		return old, err
	}
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	if err := l.mendRegionTable2(); err != nil {
		return old, err
	}
	if size > old {
		if err := l.grow(size, below, fixedAt); err != nil {
			return old, err
		}
	}
	var raw [8]byte
	binary.LittleEndian.PutUint64(raw[:], uint64(size))
	if err := l.writeFile(raw[:], sizeItem.Off, thing{"metadata VirtualDiskSize", -1}); err != nil {
		return old, err
	}
	if err := l.syncFile("writing the virtual size"); err != nil {
		return old, err
	}
	l.setGeometry(size)
	if size < old {
		return old, l.release(size, old)
	}
	return old, nil
}

// mendRegionTable2 rewrites region table 2 as a copy of table 1 when both
// are valid but differ, as a resize cut between its two region table
// writes leaves them (every reader uses table 1; table 2 would name a BAT
// region no longer in use). Synced.
func (l *Layer) mendRegionTable2() error {
	if l.regionCopy != 1 {
		return nil
	}
	t1, t2 := make([]byte, regionSize), make([]byte, regionSize)
	if err := l.readRaw(t1, region1Off, "region table 1"); err != nil {
		return err
	}
	if err := l.readRaw(t2, region2Off, "region table 2"); err != nil {
		return err
	}
	lo, hi := 0, len(t1)
	for lo < hi && t1[lo] == t2[lo] {
		lo++
	}
	for hi > lo && t1[hi-1] == t2[hi-1] {
		hi--
	}
	if lo == hi {
		return nil
	}
	lo, hi = lo&^511, (hi+511)&^511 // only the sectors that differ
	if err := l.writeFile(t1[lo:hi], region2Off+int64(lo), thing{"region table", 2}); err != nil {
		return err
	}
	return l.syncFile("copying region table 1 to 2")
}

func (l *Layer) syncFile(after string) error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("vhdx: %s: fsync after %s: %w", l.path, after, err)
	}
	return nil
}

// setGeometry sets the size and what follows from it.
func (l *Layer) setGeometry(size int64) {
	l.size = size
	l.nblocks = (size + l.blockSize - 1) / l.blockSize
	last := l.nblocks - 1
	l.batEntries = last + last/l.chunkRatio + 1
	if l.hasParent {
		l.batEntries = (last/l.chunkRatio + 1) * (l.chunkRatio + 1)
	}
}

// checkTailZero refuses a shrink to size while a byte of [size, old) that
// this file stores (a FULLY_PRESENT block, a sector of a PARTIALLY_PRESENT
// one) is not zero.
//
// The range is mapped a block at a time: the runs of a whole disk whose
// bitmaps alternate would not fit in memory.
func (l *Layer) checkTailZero(size, old int64) error {
	buf := make([]byte, miB)
	var runs []layer.Run
	var err error
	for at := size; at < old; {
		n := min(old-at, l.blockSize-at%l.blockSize)
		if runs, err = l.Map(runs[:0], at, n); err != nil {
			return err
		}
		pos := at
		for _, r := range runs {
			if r.State == layer.Data {
				for k := int64(0); k < r.Len; {
					p := buf[:min(int64(len(buf)), r.Len-k)]
					if err := l.readAt(p, r.FileOff+k, "payload data"); err != nil {
						return err
					}
					for i, c := range p {
						if c != 0 {
							return fmt.Errorf("vhdx: %s: cannot shrink to %d bytes: data at offset %d", l.path, size, pos+k+int64(i))
						}
					}
					k += int64(len(p))
				}
			}
			pos += r.Len
		}
		at += n
	}
	return nil
}

// eachSpan calls fn with each range of the file the BAT's blocks hold
// (payload blocks as whole blocks), for the current size. Nothing is
// collected: a BAT of millions of blocks costs no memory.
func (l *Layer) eachSpan(fn func(s span)) error {
	return l.scanBAT(func(idx int64, e uint64, bitmap bool) {
		switch e & 7 {
		case stFullyPresent, stPartiallyPresent:
			fo := int64(e>>20) << 20
			if bitmap {
				fn(span{fo, fo + miB})
			} else {
				fn(span{fo, fo + l.blockSize})
			}
		}
	})
}

// preallocateFile is preallocate; tests replace it to fail as a full
// filesystem does.
var preallocateFile = preallocate

// reserveFixed extends a fixed file over the new blocks of a growth to
// size and allocates their space, and returns where they start. When the
// allocation fails (no room), the file is truncated back to the size it
// had, which also gives back what the failed allocation took. w.mu is held.
func (l *Layer) reserveFixed(size int64) (int64, error) {
	w := l.w
	at, n := w.nextFree, ((size+l.blockSize-1)/l.blockSize-l.nblocks)*l.blockSize
	if n == 0 {
		return at, nil // the disk grows inside its last block
	}
	f, ok := l.f.(*os.File)
	if !ok {
		return at, l.reserve(at, n)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("vhdx: %s: %w", l.path, err)
	}
	ext, eff, fsize := w.extended, l.effSize.Load(), fi.Size()
	if err := l.reserve(at, n); err != nil {
		return 0, err
	}
	if err = preallocateFile(f, at, n); err == nil {
		return at, nil
	}
	err = fmt.Errorf("vhdx: %s: allocating %d bytes for the new blocks of a fixed image: %w", l.path, n, err)
	if terr := l.f.Truncate(fsize); terr != nil {
		return 0, fmt.Errorf("%w; truncating the file back to %d bytes: %v", err, fsize, terr)
	}
	if serr := l.f.Sync(); serr != nil {
		return 0, fmt.Errorf("%w; fsync after truncating the file back: %v", err, serr)
	}
	w.extended, w.nextFree = ext, at
	l.effSize.Store(eff)
	return 0, err
}

// grow does steps 2 and 3 of Resize; w.mu is held. fixedAt is where a
// fixed file's new blocks start (reserveFixed), 0 for other files.
func (l *Layer) grow(size, below, fixedAt int64) error {
	bs, cr := l.blockSize, l.chunkRatio
	nOld := l.nblocks
	nNew := (size + bs - 1) / bs
	if in := l.size - (nOld-1)*bs; in < bs {
		if err := l.clearTail(nOld-1, in); err != nil {
			return err
		}
	}
	last := nNew - 1
	entries := last + last/cr + 1
	if l.hasParent {
		entries = (last/cr + 1) * (cr + 1)
	}
	// Entries [first, entries) are rewritten: the new blocks', and the
	// sector bitmap entries of chunks past the old last one (in a
	// differencing file the old last chunk's is kept).
	first := nOld + nOld/cr
	keep := int64(-1)
	if l.hasParent {
		keep = ((nOld-1)/cr)*(cr+1) + cr
	}
	entry := func(idx int64, old func() (uint64, error)) (uint64, error) {
		if idx == keep {
			return old()
		}
		if idx%(cr+1) == cr {
			return stNotPresent, nil
		}
		b := idx - idx/(cr+1)
		switch {
		case fixedAt != 0:
			return uint64(fixedAt+(b-nOld)*bs) | stFullyPresent, nil
		case l.hasParent && b >= nOld && b < nNew && b*bs >= below:
			return stZero, nil
		}
		return stNotPresent, nil
	}
	if entries*8 <= l.bat.Length {
		if err := l.writeEntries(l.bat.Off, first, entries, entry); err != nil {
			return err
		}
		return l.syncFile("writing the new BAT entries")
	}
	return l.moveBAT(first, entries, entry)
}

// writeEntries writes BAT entries [from, to), as entry gives them, into a
// BAT at file offset at, in pieces of 1 MiB.
func (l *Layer) writeEntries(at, from, to int64, entry func(int64, func() (uint64, error)) (uint64, error)) error {
	const piece = miB / 8
	buf := make([]byte, miB)
	for s := from; s < to; {
		n := min(piece, to-s)
		for k := int64(0); k < n; k++ {
			idx := s + k
			e, err := entry(idx, func() (uint64, error) { return l.batEntry(idx) })
			if err != nil {
				return err
			}
			binary.LittleEndian.PutUint64(buf[8*k:], e)
		}
		if err := l.writeFile(buf[:8*n], at+8*s, thing{"BAT entry", s}); err != nil {
			return err
		}
		s += n
	}
	return nil
}

// moveBAT writes a BAT region of room for entries past everything in the
// file: entries [0, first) copied from the old BAT, the rest as entry
// gives them; syncs, then points region table 1, then 2, at it, syncing
// after each. The old BAT's space is punched.
func (l *Layer) moveBAT(first, entries int64, entry func(int64, func() (uint64, error)) (uint64, error)) error {
	n := (entries*8 + miB - 1) &^ (miB - 1)
	if n > 1<<32-miB {
		return fmt.Errorf("vhdx: %s: resize: %w: a BAT of %d entries", l.path, layer.ErrUnsupported, entries)
	}
	at := l.w.nextFree
	if err := l.reserve(at, n); err != nil {
		return err
	}
	buf := make([]byte, miB)
	for s := int64(0); s < first; s += miB / 8 {
		k := min(miB/8, first-s)
		if err := l.readAt(buf[:8*k], l.bat.Off+8*s, "BAT"); err != nil {
			return err
		}
		if err := l.writeFile(buf[:8*k], at+8*s, thing{"BAT entry", s}); err != nil {
			return err
		}
	}
	if err := l.writeEntries(at, first, entries, entry); err != nil {
		return err
	}
	if err := l.syncFile("writing the new BAT"); err != nil {
		return err
	}
	oldBAT := l.bat
	// The new table is table 1 with the BAT entry's FileOffset and Length
	// changed and a new checksum: every byte that changes lies in its first
	// sector (the entry is one of the first 15), so each table write is one
	// sector's, which a power cut cannot tear.
	if l.regionCopy != 1 {
		return ferr(l.path, region1Off, "region table 1", layer.ErrCorrupt, "not valid: copy 2 is used")
	}
	raw := make([]byte, regionSize)
	if err := l.readRaw(raw, region1Off, "region table 1"); err != nil {
		return err
	}
	regions := make([]Region, len(l.regions))
	copy(regions, l.regions)
	lo, hi := int64(0), int64(8) // the changed bytes: the checksum...
	for i := range regions {
		r := &regions[i]
		if r.GUID != guidBATRegion {
			continue
		}
		r.Off, r.Length = at, n
		e := r.entryOff - region1Off
		binary.LittleEndian.PutUint64(raw[e+16:], uint64(at))
		binary.LittleEndian.PutUint32(raw[e+24:], uint32(n))
		hi = max(hi, e+28) // ...to the entry's Length
	}
	setChecksum(raw, 4)
	hi = (hi + 511) &^ 511
	for i, off := range []int64{region1Off, region2Off} {
		if err := l.writeFile(raw[lo:hi], off+lo, thing{"region table", int64(i) + 1}); err != nil {
			return err
		}
		if err := l.syncFile(fmt.Sprintf("writing region table %d", i+1)); err != nil {
			return err
		}
	}
	l.regions, l.regionCopy, l.regionErr1 = regions, 1, nil
	for i := range l.regions {
		if l.regions[i].GUID == guidBATRegion {
			l.bat = l.regions[i]
		}
	}
	for i, a := range l.metaAreas {
		if a.start == oldBAT.Off && a.end == oldBAT.Off+oldBAT.Length {
			l.metaAreas[i] = area{at, at + n, "BAT region"}
		}
	}
	l.cacheMu.Lock()
	l.cacheGen++
	clear(l.batPages)
	l.cacheMu.Unlock()
	return l.punch(oldBAT.Off, oldBAT.Length, false, thing{"old BAT region", -1})
}

// clearTail makes bytes [in, blockSize) of block b, the last one, read
// zeros once the disk grows over them: in a stored block, the file must
// hold the whole block (it is extended if the block is at its end); the
// data there is zeroed and, in a PARTIALLY_PRESENT block, the bits of
// those sectors cleared. Synced.
func (l *Layer) clearTail(b, in int64) error {
	idx := b + b/l.chunkRatio
	e, err := l.batEntry(idx)
	if err != nil {
		return err
	}
	st := e & 7
	if st != stFullyPresent && st != stPartiallyPresent {
		return nil // reads zeros, or falls through (the caller checks the parent)
	}
	what := thing{"payload block", b}
	fo, err := l.blockFileOff(idx, e, in, what)
	if err != nil {
		return err
	}
	lo, hi := fo+in, fo+l.blockSize
	after := int64(-1) // the start of something in [lo, hi), if any
	check := func(s span) {
		if s.start != fo && lo < s.end && s.start < hi && after < 0 {
			after = s.start
		}
	}
	if err := l.eachSpan(check); err != nil {
		return err
	}
	for _, a := range l.metaAreas {
		check(span{a.start, a.end})
	}
	if after >= 0 {
		return fmt.Errorf("vhdx: %s: resize: %w: the last block (%d) is stored short of a whole block, with something else after it at 0x%x; vhd convert instead", l.path, layer.ErrUnsupported, b, after)
	}
	// The file may end inside the block: it is extended over the whole
	// block (no other structure lies there, and new blocks go past
	// startWriting's end, which counts whole blocks).
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("vhdx: %s: %w", l.path, err)
	}
	if fi.Size() < hi {
		if err := l.f.Truncate(hi); err != nil {
			return fmt.Errorf("vhdx: %s: extending the file over the last block: %w", l.path, err)
		}
		if err := l.syncFile("extending the file over the last block"); err != nil {
			return err
		}
	}
	if hi > l.effSize.Load() {
		l.effSize.Store(hi)
	}
	if st == stPartiallyPresent {
		old, err := l.blockBitmap(b)
		if err != nil {
			return err
		}
		ss := int64(l.lss)
		s0 := in / ss
		bm := append([]byte(nil), old...)
		for s := s0; s < l.spb; s++ {
			bm[s>>3] &^= 1 << (s & 7)
		}
		c := b / l.chunkRatio
		cidx := c*(l.chunkRatio+1) + l.chunkRatio
		ce, err := l.batEntry(cidx)
		if err != nil {
			return err
		}
		bfo, err := l.blockFileOff(cidx, ce, miB, thing{"sector bitmap block of chunk", c})
		if err != nil {
			return err
		}
		lo := s0 >> 3
		if err := l.writeFile(bm[lo:], l.bitmapAt(bfo, b)+lo, thing{"sector bitmap of block", b}); err != nil {
			return err
		}
		l.setBitmap(b, bm)
	}
	if err := l.zeroFile(fo+in, l.blockSize-in, what); err != nil {
		return err
	}
	return l.syncFile("clearing the end of the last block")
}

// releaseBatch is how many released blocks release punches per sync (a
// variable for tests).
var releaseBatch = 1 << 16

// release does step 5 of Resize, after the size went from old to size:
// blocks wholly past the end, and the sector bitmap blocks of chunks past
// the last, become NOT_PRESENT; synced; their space is punched and the
// file truncated after its last structure. w.mu is held.
func (l *Layer) release(size, old int64) error {
	bs, cr := l.blockSize, l.chunkRatio
	nNew, nOld := l.nblocks, (old+bs-1)/bs
	var freed []span
	released := false
	// The released blocks are punched in batches, each after the entries
	// that pointed at them are durably NOT_PRESENT: the list stays bounded
	// however many blocks a shrink releases.
	flush := func() error {
		if len(freed) == 0 {
			return nil
		}
		if err := l.syncFile("releasing the blocks past the end"); err != nil {
			return err
		}
		for _, s := range freed {
			if s.start >= headerAreaEnd {
				if err := l.punch(s.start, s.end-s.start, false, thing{"released block", -1}); err != nil {
					return err
				}
			}
		}
		freed, released = freed[:0], true
		return nil
	}
	drop := func(idx, n int64) error {
		e, err := l.batEntry(idx)
		if err != nil {
			return err
		}
		if st := e & 7; st == stFullyPresent || st == stPartiallyPresent {
			freed = append(freed, span{int64(e>>20) << 20, int64(e>>20)<<20 + n})
		}
		if e != stNotPresent {
			if err := l.setBAT(idx, stNotPresent); err != nil {
				return err
			}
		}
		if len(freed) >= releaseBatch {
			return flush()
		}
		return nil
	}
	for b := nNew; b < nOld; b++ {
		if err := drop(b+b/cr, min(bs, old-b*bs)); err != nil {
			return err
		}
	}
	if l.hasParent {
		for c := (nNew-1)/cr + 1; c <= (nOld-1)/cr; c++ {
			if err := drop(c*(cr+1)+cr, miB); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if !released {
		return nil
	}
	end := int64(headerAreaEnd)
	for _, a := range l.metaAreas {
		end = max(end, a.end)
	}
	if err := l.eachSpan(func(s span) { end = max(end, s.end) }); err != nil {
		return err
	}
	end = (end + miB - 1) &^ (miB - 1)
	w := l.w
	if end < max(w.extended, l.fileSize) {
		if err := l.f.Truncate(end); err != nil {
			return fmt.Errorf("vhdx: %s: truncating the file after its last block: %w", l.path, err)
		}
		w.extended, w.nextFree, l.fileSize = end, end, end
		l.effSize.Store(end)
	}
	return nil
}
