package vhdx

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vhdmount/vhdmount/format/layer"
)

// CompactResult says what Compact did.
type CompactResult struct {
	Before, After int64 // bytes the host filesystem stored for the image (st_blocks)
	FileBefore    int64 // file sizes
	FileAfter     int64
	BlocksFreed   int64 // stored payload blocks released (dynamic and differencing)
}

// maxCompactMetadata bounds the metadata items a compacted file is given
// (the items are read into memory).
const maxCompactMetadata = 64 * miB

// compactStep, when set (by tests), is called before each step of a
// rewrite; an error stops the rewrite there, as a crash would.
var compactStep func(step string) error

func (l *Layer) step(s string) error {
	if compactStep != nil {
		return compactStep(s)
	}
	return nil
}

// Compact gives back the space of the layer that holds nothing the disk
// shows, as format's Compact describes.
//
// A fixed file's all-zero 4 KiB pages of payload are punched out in place
// (never a structure); the file reads exactly as before, so its headers are
// not touched.
//
// A dynamic or differencing file is rewritten into a temporary file beside
// it (.NAME.vhdx-compact-*), laid out as Create lays files out: the header
// section (the same creator; both headers with the same DataWriteGuid, so
// children keep matching, a new FileWriteGuid, since the file is another,
// and no log), the log region (empty) at 1 MiB, the metadata region at
// 2 MiB (the same items, user items included, in the same order), the BAT,
// in a differencing file a sector bitmap block per chunk, then the kept
// payload blocks front to back without gaps, their all-zero pages left as
// holes. A payload block is dropped (NOT_PRESENT) when it shows only zeros:
// in a file without a parent when every byte reads zero; in a differencing
// file when no sector is present, or when its present sectors are all zero
// and belowHasData says the chain below stores nothing there. A zero block
// over parent data is kept as it is (FULLY_PRESENT or PARTIALLY_PRESENT
// with its bitmap; its data pages are holes, so it costs no space): it is
// not turned into ZERO, which libvhdi reads through to the parent. ZERO,
// UNMAPPED and UNDEFINED blocks read zeros: dropped where nothing is below,
// kept with their state elsewhere. verify (given the temporary file's
// path) must accept the file before it is synced, given the image's owner
// and mode, and renamed over the image; until then the image is untouched.
// The layer's file is replaced: the caller closes the layer.
func (l *Layer) Compact(belowHasData func(off, n int64) bool, verify func(tmp string) error, progress func(int64)) (res CompactResult, err error) {
	if l.w == nil {
		return res, ErrReadOnly
	}
	path := l.path
	if progress == nil {
		progress = func(int64) {}
	}
	of, ok := l.f.(*os.File)
	if !ok {
		return res, fmt.Errorf("vhdx: %s: compact: %w: not an operating system file", path, layer.ErrUnsupported)
	}
	fi, err := of.Stat()
	if err != nil {
		return res, fmt.Errorf("vhdx: %s: %w", path, err)
	}
	res.FileBefore = fi.Size()
	res.Before = hostBlocks(fi)
	if l.leaveAlloc && !l.hasParent {
		if err := l.sparsify(progress); err != nil {
			return res, err
		}
		if fi, err = of.Stat(); err == nil {
			res.After = hostBlocks(fi)
		}
		res.FileAfter = res.FileBefore
		return res, nil
	}
	if n := hardLinks(fi); n > 1 {
		return res, fmt.Errorf("vhdx: %s: compact: the image has %d hard links; rewriting it would split them", path, n)
	}
	for _, r := range l.regions {
		if r.GUID != guidBATRegion && r.GUID != guidMetadataRegion {
			return res, fmt.Errorf("vhdx: %s: region table entry at 0x%x: compact: %w: the optional region %s (0x%x bytes at 0x%x) would not be copied by the rewrite",
				path, r.entryOff, layer.ErrUnsupported, r.GUID, r.Length, r.Off)
		}
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".vhdx-compact-"+hex.EncodeToString(rnd[:]))
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return res, fmt.Errorf("vhdx: %w", err)
	}
	done := false
	defer func() {
		if !done {
			nf.Close()
			os.Remove(tmp)
		}
	}()
	freed, err := l.rewrite(nf, belowHasData, progress)
	if err != nil {
		return res, err
	}
	res.BlocksFreed = freed
	if err := l.step("sync"); err != nil {
		return res, err
	}
	if err := nf.Sync(); err != nil {
		return res, fmt.Errorf("vhdx: %s: fsync: %w", tmp, err)
	}
	if err := l.step("verify"); err != nil {
		return res, err
	}
	if err := verify(tmp); err != nil {
		return res, err
	}
	if err := l.step("mode"); err != nil {
		return res, err
	}
	chown(nf, fi) // best effort: only root may give files away
	if err := nf.Chmod(fi.Mode().Perm()); err != nil {
		return res, fmt.Errorf("vhdx: %s: %w", tmp, err)
	}
	if err := l.step("rename"); err != nil {
		return res, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, fmt.Errorf("vhdx: %w", err)
	}
	done = true
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	if nfi, err := nf.Stat(); err == nil {
		res.FileAfter = nfi.Size()
		res.After = hostBlocks(nfi)
	}
	nf.Close()
	return res, nil
}

// sparsify punches the all-zero 4 KiB pages of the payload blocks of a
// fixed file (only the bytes the disk shows: the Data runs of its map).
func (l *Layer) sparsify(progress func(int64)) error {
	const chunk = 4 * miB
	buf := make([]byte, chunk)
	var runs []layer.Run
	for b := int64(0); b < l.nblocks; b++ {
		off := b * l.blockSize
		n := min(l.blockSize, l.size-off)
		var err error
		if runs, err = l.Map(runs[:0], off, n); err != nil {
			return err
		}
		for _, r := range runs {
			if r.State != layer.Data {
				continue
			}
			// Whole pages of the file inside the run.
			for fo, end := (r.FileOff+4095)&^4095, (r.FileOff+r.Len)&^4095; fo < end; {
				k := min(int64(chunk), end-fo)
				p := buf[:k]
				if err := l.readAt(p, fo, "payload data"); err != nil {
					return err
				}
				for a := int64(0); a < k; {
					if !isZero(p[a : a+4096]) {
						a += 4096
						continue
					}
					e := a + 4096
					for e < k && isZero(p[e:e+4096]) {
						e += 4096
					}
					if err := l.punch(fo+a, e-a, false, thing{"payload block", b}); err != nil {
						return err
					}
					a = e
				}
				fo += k
			}
		}
		progress(n)
	}
	return l.Sync()
}

// rewrite writes the compacted copy of l into nf and returns the number of
// payload blocks dropped.
func (l *Layer) rewrite(nf *os.File, belowHasData func(off, n int64) bool, progress func(int64)) (int64, error) {
	w := func(p []byte, off int64, what string) error {
		if _, err := nf.WriteAt(p, off); err != nil {
			return fmt.Errorf("vhdx: %s: writing %s: %w", nf.Name(), what, err)
		}
		return nil
	}
	// sparse writes the non-zero 4 KiB pages of p: the rest stays holes.
	sparse := func(p []byte, off int64, what string) error {
		for a := 0; a < len(p); a += 4096 {
			if q := p[a:min(a+4096, len(p))]; !isZero(q) {
				if err := w(q, off+int64(a), what); err != nil {
					return err
				}
			}
		}
		return nil
	}
	// Metadata: the same items, in the table's order.
	var items []metaItem
	var total int64
	for _, it := range l.metaItems {
		total += it.Length
		if total > maxCompactMetadata {
			return 0, fmt.Errorf("vhdx: %s: compact: %w: more than %d bytes of metadata items", l.path, layer.ErrUnsupported, maxCompactMetadata)
		}
		data := make([]byte, it.Length)
		if err := l.readAt(data, it.Off, "metadata item "+it.ID.String()); err != nil {
			return 0, err
		}
		var fl uint32
		if it.IsUser {
			fl |= metaIsUser
		}
		if it.IsVirtualDisk {
			fl |= metaIsVirtualDisk
		}
		if it.IsRequired {
			fl |= metaIsRequired
		}
		items = append(items, metaItem{it.ID, fl, data})
	}
	meta := encodeMetadata(items)
	metaLen := (int64(len(meta)) + miB - 1) &^ (miB - 1)
	batOff := createMetaOff + metaLen
	batLen := (l.batEntries*8 + miB - 1) &^ (miB - 1)
	bitmapOff := batOff + batLen
	pos := bitmapOff
	r := l.chunkRatio
	if l.hasParent {
		pos += ((l.nblocks-1)/r + 1) * miB
	}

	// Header section.
	if err := l.step("header"); err != nil {
		return 0, err
	}
	hs := make([]byte, headerAreaEnd)
	copy(hs[fileIDOff:], encodeFileID(l.creator))
	old := l.headers[l.cur]
	fw, err := newGUID()
	if err != nil {
		return 0, fmt.Errorf("vhdx: %s: making a GUID: %w", l.path, err)
	}
	for i, off := range []int{header1Off, header2Off} {
		h := &Header{SequenceNumber: old.SequenceNumber + uint64(i) + 1, FileWriteGUID: fw, DataWriteGUID: old.DataWriteGUID,
			Version: 1, LogLength: createLogLen, LogOffset: createLogOff}
		copy(hs[off:], h.encode())
	}
	rt := encodeRegionTable([]regionEntry{
		{guidBATRegion, batOff, batLen, true},
		{guidMetadataRegion, createMetaOff, metaLen, true},
	})
	copy(hs[region1Off:], rt)
	copy(hs[region2Off:], rt)
	if err := sparse(hs, 0, "header section"); err != nil {
		return 0, err
	}
	if err := l.step("metadata"); err != nil {
		return 0, err
	}
	if err := sparse(meta, createMetaOff, "metadata"); err != nil {
		return 0, err
	}
	entry := func(idx int64, e uint64) error {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], e)
		return w(b[:], batOff+8*idx, fmt.Sprintf("BAT entry %d", idx))
	}
	if l.hasParent {
		for c := int64(0); c <= (l.nblocks-1)/r; c++ {
			if err := entry(c*(r+1)+r, uint64(bitmapOff+c*miB)|stFullyPresent); err != nil {
				return 0, err
			}
		}
	}

	// Payload blocks, front to back.
	if err := l.step("blocks"); err != nil {
		return 0, err
	}
	const chunk = 4 * miB
	buf := make([]byte, min(chunk, l.blockSize))
	ss := int64(l.lss)
	var freed int64
	for b := int64(0); b < l.nblocks; b++ {
		off := b * l.blockSize
		need := min(l.blockSize, l.size-off)
		idx := b + b/r
		e, err := l.batEntry(idx)
		if err != nil {
			return 0, err
		}
		st := e & 7
		switch st {
		case stNotPresent:
			progress(need)
			continue
		case stZero, stUnmapped, stUndefined:
			if l.hasParent && belowHasData(off, need) {
				if err := entry(idx, st); err != nil {
					return 0, err
				}
			} // else NOT_PRESENT: it stored nothing, so it frees nothing
			progress(need)
			continue
		case stFullyPresent, stPartiallyPresent:
		default:
			return 0, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt, "payload block %d has the invalid state %d", b, st)
		}
		fo, err := l.blockFileOff(idx, e, need, thing{"payload block", b})
		if err != nil {
			return 0, err
		}
		var bm []byte
		if st == stPartiallyPresent {
			if !l.hasParent {
				return 0, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt,
					"payload block %d is PARTIALLY_PRESENT in a file without a parent", b)
			}
			if bm, err = l.blockBitmap(b); err != nil {
				return 0, err
			}
			if isZero(bm) {
				freed++
				progress(need)
				continue
			}
		}
		// One pass: a block is placed at its first non-zero page; pages
		// before it are holes in the new file.
		placed := int64(-1)
		for in := int64(0); in < need; {
			k := min(int64(len(buf)), need-in)
			p := buf[:k]
			if err := l.readAt(p, fo+in, "payload data"); err != nil {
				return 0, err
			}
			if bm != nil { // sectors not present read from below: not this file's
				for s := in / ss; s < (in+k)/ss; s++ {
					if !bit(bm, s) {
						clear(p[s*ss-in : (s+1)*ss-in])
					}
				}
			}
			for a := int64(0); a < k; {
				z := min(a+4096, k)
				if isZero(p[a:z]) {
					a = z
					continue
				}
				for z < k && !isZero(p[z:min(z+4096, k)]) {
					z = min(z+4096, k)
				}
				if placed < 0 {
					placed = pos
				}
				if err := w(p[a:z], placed+in+a, fmt.Sprintf("payload block %d", b)); err != nil {
					return 0, err
				}
				a = z
			}
			in += k
		}
		if placed < 0 && !(l.hasParent && belowHasData(off, need)) {
			freed++
			progress(need)
			continue
		}
		if placed < 0 {
			placed = pos // zeros over the parent's data: kept, all holes
		}
		if placed+l.blockSize > maxFileOffset {
			return 0, fmt.Errorf("vhdx: %s: compact: the file would grow past %d bytes", l.path, int64(maxFileOffset))
		}
		if bm != nil {
			n := l.spb / 8
			if err := w(bm, bitmapOff+(b/r)*miB+(b%r)*n, fmt.Sprintf("sector bitmap of block %d", b)); err != nil {
				return 0, err
			}
		}
		if err := entry(idx, uint64(placed)|st); err != nil {
			return 0, err
		}
		pos = placed + l.blockSize
		progress(need)
	}
	if err := l.step("size"); err != nil {
		return 0, err
	}
	if err := nf.Truncate(pos); err != nil {
		return 0, fmt.Errorf("vhdx: %s: %w", nf.Name(), err)
	}
	return freed, nil
}
