package vhdx

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/vhdmount/vhdmount/format/layer"
)

var _ layer.Writer = (*Layer)(nil)

// writeState is what a layer opened read-write keeps for writing.
type writeState struct {
	mu         sync.Mutex // the header update, allocation at the end of the file, callbacks
	headerDone bool       // this session's header update is on disk
	nextFree   int64      // where the next block goes: MiB-aligned, past every structure and the file's end
	extended   int64      // the file's size as made durable by reserve; blocks below it need no extension
	step       int64      // how far reserve extends the file next time at least
	locks      [256]sync.Mutex
	alloc      func(off, n int64)
	free       func(off, n int64)
	nextData   GUID // if not zero, the DataWriteGuid the session's header update writes (SetNextDataWriteGUID)
}

// ErrReadOnly is returned by WriteAt on a layer opened read-only.
var ErrReadOnly = errors.New("vhdx: layer opened read-only")

// prepareWrite runs on a read-write open, before the layer is used: the
// structural check (any problem refuses the open), then a pending log is
// replayed into the file and cleared by a header update. It reports whether
// it replayed a log, in which case the caller parses the file again.
func (l *Layer) prepareWrite() (replayed bool, err error) {
	if ps := l.check(true); len(ps) > 0 {
		msgs := make([]string, 0, 3)
		for i, p := range ps {
			if i == 3 {
				msgs = append(msgs, fmt.Sprintf("and %d more", len(ps)-3))
				break
			}
			msgs = append(msgs, p.Msg)
		}
		return false, ferr(l.path, ps[0].Off, "structure check", layer.ErrCorrupt,
			"%s; a damaged image is never written: open it read-only to read what is readable", strings.Join(msgs, "; "))
	}
	if l.logReplayed == nil {
		return false, nil
	}
	if err := l.replayIntoFile(); err != nil {
		return false, err
	}
	// Clearing the log is a header update. The replay is not a change the
	// user sees (the file reads as it did), so DataWriteGuid stays: children
	// keep matching.
	if err := l.updateHeaders(false); err != nil {
		return false, err
	}
	return true, nil
}

// startWriting makes the layer writable; the file has no pending log and
// passed the check.
func (l *Layer) startWriting() error {
	end := int64(headerAreaEnd)
	for _, a := range l.metaAreas {
		end = max(end, a.end)
	}
	end = max(end, l.effSize.Load())
	err := l.scanBAT(func(idx int64, e uint64, bitmap bool) {
		switch e & 7 {
		case stFullyPresent, stPartiallyPresent:
			fo := int64(e>>20) << 20
			if bitmap {
				end = max(end, fo+miB)
			} else {
				end = max(end, fo+l.blockSize)
			}
		}
	})
	if err != nil {
		return err
	}
	next := (end + miB - 1) &^ (miB - 1)
	l.w = &writeState{nextFree: next, extended: max(next, l.fileSize)}
	return nil
}

// reserve extends the file by growStep at least the first time, and by
// twice as much each next time up to maxGrowStep, so that the fsync an
// extension costs (it writes back every dirty page of the file, and new
// blocks wait for it) is paid a number of times that grows with the
// logarithm of what a session writes: 4 times for 512 MiB written, not 8.
// What a session reserved and did not use is given back at Close
// (trimReserve); after a crash it stays, as holes past the last block.
const (
	growStep    = 64 * miB
	maxGrowStep = 1024 * miB
)

// reserve makes [fo, fo+n) part of the file, durably, before a BAT entry
// may point there: the file is extended (by at least growStep) and synced,
// so that a power cut can never leave an entry pointing past the end of the
// file, whatever order the kernel wrote the extension and the entry in. The
// new space reads zeros. Called with w.mu held.
func (l *Layer) reserve(fo, n int64) error {
	w := l.w
	if fo+n > maxFileOffset {
		return fmt.Errorf("vhdx: %s: the file would grow past %d bytes", l.path, int64(maxFileOffset))
	}
	if fo+n > w.extended {
		w.step = min(max(w.step, growStep), maxGrowStep)
		end := min(max(fo+n, w.extended+w.step), maxFileOffset)
		if err := l.f.Truncate(end); err != nil {
			// A filesystem without holes, or near its file size limit,
			// may take the block but not the reserve.
			end = fo + n
			if err := l.f.Truncate(end); err != nil {
				return fmt.Errorf("vhdx: %s: extending the file to 0x%x: %w", l.path, end, err)
			}
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("vhdx: %s: fsync after extending the file: %w", l.path, err)
		}
		w.extended = end
		w.step *= 2
	}
	w.nextFree = fo + n
	l.effSize.Store(fo + n)
	return nil
}

// trimReserve gives back, at Close, the space reserve extended the file by
// that no block took: the file then ends at its last block.
func (l *Layer) trimReserve() error {
	w := l.w
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.extended <= w.nextFree || w.extended <= l.fileSize {
		return nil
	}
	end := max(w.nextFree, l.fileSize)
	if err := l.f.Truncate(end); err != nil {
		return fmt.Errorf("vhdx: %s: truncating the unused end of the file: %w", l.path, err)
	}
	w.extended = end
	return nil
}

// NotifyAlloc registers callbacks: alloc(off, n) is called with the virtual
// range of each block the layer newly allocates, after its BAT entry is
// written; free(off, n) for each it unallocates (none yet).
func (l *Layer) NotifyAlloc(alloc, free func(off, n int64)) {
	if l.w == nil {
		return
	}
	l.w.mu.Lock()
	l.w.alloc, l.w.free = alloc, free
	l.w.mu.Unlock()
}

// Sync makes every completed write durable.
func (l *Layer) Sync() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("vhdx: %s: fsync: %w", l.path, err)
	}
	return nil
}

func newGUID() (GUID, error) {
	var g GUID
	if _, err := rand.Read(g[:]); err != nil {
		return g, err
	}
	g[7] = g[7]&0x0F | 0x40 // version 4 (the field is little-endian)
	g[8] = g[8]&0x3F | 0x80 // variant
	return g, nil
}

// updateHeaders writes a header with the next sequence number, a new
// FileWriteGuid, a new DataWriteGuid when newData, and no log, into the
// slot that is not current, and fsyncs; then the same with the sequence
// number after that into the other slot, so that both are valid. A crash
// at any instant leaves a valid current header: the old one until the
// first write is durable, the new ones after.
func (l *Layer) updateHeaders(newData bool) error {
	old := l.headers[l.cur]
	h := *old
	h.raw = nil
	var err error
	if h.FileWriteGUID, err = newGUID(); err != nil {
		return fmt.Errorf("vhdx: %s: making a GUID: %w", l.path, err)
	}
	if newData && l.w != nil && !l.w.nextData.IsZero() {
		h.DataWriteGUID = l.w.nextData
	} else if newData {
		if h.DataWriteGUID, err = newGUID(); err != nil {
			return fmt.Errorf("vhdx: %s: making a GUID: %w", l.path, err)
		}
	}
	h.LogGUID = GUID{}
	slot := 1 - l.cur
	for k := 0; k < 2; k++ {
		h.SequenceNumber++
		h.Off = int64(header1Off + slot*(header2Off-header1Off))
		b := h.encode()
		if err := l.writeFile(b, h.Off, thing{"header", int64(slot) + 1}); err != nil {
			return err
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("vhdx: %s: fsync after writing header %d: %w", l.path, slot+1, err)
		}
		nh := h
		nh.raw = b
		l.headers[slot], l.headerErrs[slot] = &nh, nil
		l.cur = slot
		slot = 1 - slot
	}
	return nil
}

// thing names a structure for messages; n < 0 means no number. Formatting
// waits for an error, so the hot paths allocate nothing for it.
type thing struct {
	kind string
	n    int64
}

func (w thing) String() string {
	if w.n < 0 {
		return w.kind
	}
	return w.kind + " " + strconv.FormatInt(w.n, 10)
}

func (l *Layer) writeFile(p []byte, off int64, what thing) error {
	if _, err := l.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("vhdx: %s: writing %s (%d bytes at 0x%x): %w", l.path, what, len(p), off, err)
	}
	return nil
}

// firstWrite does the session's header update once, before the first write.
func (l *Layer) firstWrite() error { return l.sessionHeader(true) }

// sessionHeader does the session's header update unless a write did it
// already; newData gives the file a new DataWriteGuid as well.
func (l *Layer) sessionHeader(newData bool) error {
	w := l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.headerDone {
		return nil
	}
	if err := l.updateHeaders(newData); err != nil {
		return err
	}
	// A later write of the session still needs its new DataWriteGuid
	// unless this update gave one.
	w.headerDone = newData
	return nil
}

// WriteAt writes p at virtual offset off into this file; below reads what
// the chain under this layer shows (zeros without a parent), for the parts
// of partly written logical sectors this file does not hold.
//
// Before the first write of the session, the headers are updated (new
// FileWriteGuid and DataWriteGuid). FULLY_PRESENT blocks are written in
// place. A new block goes at the MiB-aligned end of the file, which is
// extended first (the new space reads zeros); its data is written, then, in
// a differencing file, its sector bitmap bits, then its BAT entry in one
// 8-byte write. A differencing file's chunk gets its sector bitmap block
// (zeros, published PRESENT) before any block of it is PARTIALLY_PRESENT.
// In a PARTIALLY_PRESENT block, bits are set only after the sectors they
// cover are written. A crash at any point leaves the file as it was before
// the interrupted write, or with it complete per sector, perhaps with
// unreferenced space at the end, never reused. Durability needs Sync.
//
// Writes to different blocks proceed in parallel; writes to the same block
// are serialized.
func (l *Layer) WriteAt(p []byte, off int64, below io.ReaderAt) (int, error) {
	if l.w == nil {
		return 0, fmt.Errorf("%w: %s", ErrReadOnly, l.path)
	}
	if off < 0 || off > l.size || int64(len(p)) > l.size-off {
		return 0, fmt.Errorf("vhdx: %s: write of %d bytes at %d outside the %d-byte disk", l.path, len(p), off, l.size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := l.firstWrite(); err != nil {
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		b, in := off/l.blockSize, off%l.blockSize
		n := min(int64(len(p)), l.blockSize-in)
		lk := &l.w.locks[b%int64(len(l.w.locks))]
		lk.Lock()
		err := l.writeBlock(b, in, p[:n], below)
		lk.Unlock()
		if err != nil {
			return written, err
		}
		written += int(n)
		p, off = p[n:], off+n
	}
	return written, nil
}

// writeBlock writes p at byte in of block b, with the block's lock held.
func (l *Layer) writeBlock(b, in int64, p []byte, below io.ReaderAt) error {
	idx := b + b/l.chunkRatio
	e, err := l.batEntry(idx)
	if err != nil {
		return err
	}
	need := min(l.blockSize, l.size-b*l.blockSize)
	st := e & 7
	switch st {
	case stFullyPresent:
		fo, err := l.blockFileOff(idx, e, need, thing{"payload block", b})
		if err != nil {
			return err
		}
		return l.writeFile(p, fo+in, thing{"payload block", b})
	case stPartiallyPresent:
		fo, err := l.blockFileOff(idx, e, need, thing{"payload block", b})
		if err != nil {
			return err
		}
		return l.writePartial(b, fo, in, p, below)
	case stNotPresent, stUndefined, stZero, stUnmapped:
	default:
		return ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt, "payload block %d has the invalid state %d", b, st)
	}
	if st == stNotPresent && l.hasParent {
		return l.newPartial(b, idx, in, p, below)
	}
	// The block reads zeros and does not fall through: allocate it
	// FULLY_PRESENT, zeros around the write (the new space reads zeros).
	if isZero(p) {
		return nil
	}
	fo, err := l.allocate(l.blockSize)
	if err != nil {
		return err
	}
	if err := l.writeFile(p, fo+in, thing{"payload block", b}); err != nil {
		return err
	}
	if err := l.setBAT(idx, uint64(fo)|stFullyPresent); err != nil {
		return err
	}
	l.notifyAlloc(b)
	return nil
}

func (l *Layer) notifyAlloc(b int64) {
	l.w.mu.Lock()
	fn := l.w.alloc
	l.w.mu.Unlock()
	if fn != nil {
		fn(b*l.blockSize, min(l.blockSize, l.size-b*l.blockSize))
	}
}

// allocate reserves n bytes (a multiple of 1 MiB) at the end of the file
// and extends the file over them: they read zeros.
func (l *Layer) allocate(n int64) (int64, error) {
	w := l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	fo := w.nextFree
	if err := l.reserve(fo, n); err != nil {
		return 0, err
	}
	return fo, nil
}

// setBAT writes BAT entry idx (one 8-byte write), then updates the cache.
func (l *Layer) setBAT(idx int64, e uint64) error {
	var raw [8]byte
	binary.LittleEndian.PutUint64(raw[:], e)
	if err := l.writeFile(raw[:], l.bat.Off+8*idx, thing{"BAT entry", idx}); err != nil {
		return err
	}
	l.cacheMu.Lock()
	l.cacheGen++
	if pg := l.batPages[idx/batPageEntries]; pg != nil {
		pg.e[idx%batPageEntries].Store(e)
		if e != 0 {
			pg.zero.Store(false)
		}
	}
	l.cacheMu.Unlock()
	return nil
}

// setBitmap stores bm as block b's bitmap in the cache.
func (l *Layer) setBitmap(b int64, bm []byte) {
	l.cacheMu.Lock()
	l.cacheGen++
	l.cacheBitmap(b, bm)
	l.cacheMu.Unlock()
}

// bitmapBlock returns the file offset of the sector bitmap block of chunk c,
// allocating it (zeros, published PRESENT) if it is NOT_PRESENT.
func (l *Layer) bitmapBlock(c int64) (int64, error) {
	idx := c*(l.chunkRatio+1) + l.chunkRatio
	what := thing{"sector bitmap block of chunk", c}
	// Under w.mu: one allocation per chunk.
	l.w.mu.Lock()
	e, err := l.batEntry(idx)
	l.w.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if e&7 == stFullyPresent {
		return l.blockFileOff(idx, e, miB, what)
	}
	if e&7 != stNotPresent {
		return 0, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt, "%s has the invalid state %d", what, e&7)
	}
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	if e, err = l.batEntry(idx); err != nil {
		return 0, err
	}
	if e&7 == stFullyPresent {
		return l.blockFileOff(idx, e, miB, what)
	}
	fo := l.w.nextFree
	if err := l.reserve(fo, miB); err != nil {
		return 0, err
	}
	if err := l.setBAT(idx, uint64(fo)|stFullyPresent); err != nil {
		return 0, err
	}
	return fo, nil
}

// widen extends a write of p at byte in of block b to whole logical
// sectors, filling the edges from this file where has(sector) (the sector
// is this file's, at fo) and from below otherwise. It returns p and in
// unchanged when the write is sector-aligned.
func (l *Layer) widen(b, fo, in int64, p []byte, has func(s int64) bool, below io.ReaderAt) ([]byte, int64, error) {
	ss := int64(l.lss)
	end := in + int64(len(p))
	a, z := in&^(ss-1), (end+ss-1)&^(ss-1)
	if a == in && z == end {
		return p, in, nil
	}
	buf := make([]byte, z-a)
	fill := func(dst []byte, s int64) error {
		if has(s) {
			return l.readAt(dst, fo+s*ss, "payload data")
		}
		if below == nil {
			clear(dst)
			return nil
		}
		voff := b*l.blockSize + s*ss
		n, err := below.ReadAt(dst, voff)
		if n == len(dst) {
			return nil
		}
		if errors.Is(err, io.EOF) {
			clear(dst[n:])
			return nil
		}
		return fmt.Errorf("vhdx: %s: reading the layer below at %d for a partial sector: %w", l.path, voff, err)
	}
	if a != in {
		if err := fill(buf[:ss], a/ss); err != nil {
			return nil, 0, err
		}
	}
	if z != end && (z-ss != a || a == in) {
		if err := fill(buf[len(buf)-int(ss):], z/ss-1); err != nil {
			return nil, 0, err
		}
	}
	copy(buf[in-a:], p)
	return buf, a, nil
}

func bit(bm []byte, s int64) bool { return bm[s>>3]&(1<<(s&7)) != 0 }

// bitmapAt returns the file offset of block b's bits in its chunk's sector
// bitmap block at bfo.
func (l *Layer) bitmapAt(bfo, b int64) int64 { return bfo + (b%l.chunkRatio)*(l.spb/8) }

// newPartial writes p at byte in of NOT_PRESENT block b (BAT entry idx) of a
// differencing file: the chunk's sector bitmap block first, then a new
// block with the data, then the block's bits, then the BAT entry.
func (l *Layer) newPartial(b, idx, in int64, p []byte, below io.ReaderAt) error {
	bfo, err := l.bitmapBlock(b / l.chunkRatio)
	if err != nil {
		return err
	}
	fo, err := l.allocate(l.blockSize)
	if err != nil {
		return err
	}
	buf, at, err := l.widen(b, fo, in, p, func(int64) bool { return false }, below)
	if err != nil {
		return err
	}
	if err := l.writeFresh(buf, fo+at, thing{"payload block", b}); err != nil {
		return err
	}
	if err := l.barrierIfWidened(buf, p, at, in); err != nil {
		return err
	}
	// The block's whole bitmap: bits left by an earlier, unpublished
	// allocation of this block must not survive.
	ss := int64(l.lss)
	bm := make([]byte, l.spb/8)
	for s := at / ss; s < (at+int64(len(buf)))/ss; s++ {
		bm[s>>3] |= 1 << (s & 7)
	}
	if err := l.writeFile(bm, l.bitmapAt(bfo, b), thing{"sector bitmap of block", b}); err != nil {
		return err
	}
	l.setBitmap(b, bm)
	if err := l.setBAT(idx, uint64(fo)|stPartiallyPresent); err != nil {
		return err
	}
	l.notifyAlloc(b)
	return nil
}

// writePartial writes p at byte in of PARTIALLY_PRESENT block b stored at
// fo: the data (edge sectors this file does not hold filled from below),
// then the bits of the sectors written.
func (l *Layer) writePartial(b, fo, in int64, p []byte, below io.ReaderAt) error {
	old, err := l.blockBitmap(b)
	if err != nil {
		return err
	}
	buf, at, err := l.widen(b, fo, in, p, func(s int64) bool { return bit(old, s) }, below)
	if err != nil {
		return err
	}
	if err := l.writeFile(buf, fo+at, thing{"payload block", b}); err != nil {
		return err
	}
	if err := l.barrierIfWidened(buf, p, at, in); err != nil {
		return err
	}
	ss := int64(l.lss)
	return l.setBits(b, old, at/ss, (at+int64(len(buf)))/ss)
}

// barrierIfWidened syncs the file when a write was widened to whole sectors
// with bytes it did not bring (the parent's, or this file's): those bytes
// must be durable before the bits that make the sector this file's are, or
// a power cut could leave the sector reading zeros where the user wrote
// nothing. Sector-aligned writes (all a filesystem on a loop device makes)
// pay nothing.
func (l *Layer) barrierIfWidened(buf, p []byte, at, in int64) error {
	if at == in && len(buf) == len(p) {
		return nil
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("vhdx: %s: fsync before publishing a partly written sector: %w", l.path, err)
	}
	return nil
}

// setBits sets the bits of sectors [s0, s1) of PARTIALLY_PRESENT block b,
// whose bits are old, in its chunk's sector bitmap block.
func (l *Layer) setBits(b int64, old []byte, s0, s1 int64) error {
	changed := false
	for s := s0; s < s1 && !changed; s++ {
		changed = !bit(old, s)
	}
	if !changed {
		return nil
	}
	bm := bytes.Clone(old)
	for s := s0; s < s1; s++ {
		bm[s>>3] |= 1 << (s & 7)
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
	lo, hi := s0>>3, (s1-1)>>3+1
	if err := l.writeFile(bm[lo:hi], l.bitmapAt(bfo, b)+lo, thing{"sector bitmap of block", b}); err != nil {
		return err
	}
	l.setBitmap(b, bm)
	return nil
}

// writeFresh writes p at file offset off, into space newly allocated (it
// reads zeros): the all-zero 4 KiB pages of the file in it are skipped, so
// they stay holes.
func (l *Layer) writeFresh(p []byte, off int64, what thing) error {
	for len(p) > 0 {
		k := min(int64(len(p)), (off+4096)&^4095-off)
		if isZero(p[:k]) {
			p, off = p[k:], off+k
			continue
		}
		// A run of pages with data.
		for k < int64(len(p)) {
			j := min(int64(len(p)), k+4096)
			if isZero(p[k:j]) {
				break
			}
			k = j
		}
		if err := l.writeFile(p[:k], off, what); err != nil {
			return err
		}
		p, off = p[k:], off+k
	}
	return nil
}

var zeroBuf = make([]byte, 64*kiB)

func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroBuf))
		if !bytes.Equal(p[:n], zeroBuf[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
