package vhd

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// CompactResult says what Compact did.
type CompactResult struct {
	Before, After int64 // bytes the host filesystem stored for the image (st_blocks)
	FileBefore    int64 // file sizes
	FileAfter     int64
	BlocksFreed   int64 // blocks released (dynamic and differencing)
}

// Compact gives back the space of the layer that holds nothing the disk
// shows, as format's Compact describes: a fixed disk's all-zero pages are
// punched; a dynamic or differencing one is rewritten into a temporary file
// beside it, which verify (given its path) must accept before it is renamed
// over the image. belowHasData reports whether a layer below stores data in
// a range (a zero block over one is kept). The layer's file is replaced: the
// caller closes the layer and opens the image anew to use it.
func (l *Layer) Compact(belowHasData func(off, n int64) bool, verify func(tmp string) error, progress func(int64)) (res CompactResult, err error) {
	if l.readOnly {
		return res, ErrReadOnly
	}
	path := l.path
	if progress == nil {
		progress = func(int64) {}
	}
	of, isOS := l.f.(*os.File)
	if !isOS {
		return res, fmt.Errorf("vhd: %s: compact: %w: not an operating system file", path, ErrUnsupported)
	}
	fi, err := of.Stat()
	if err != nil {
		return res, fmt.Errorf("vhd: %s: %w", path, err)
	}
	res.FileBefore = fi.Size()
	res.Before, _ = hostBlocks(of)
	if l.fixed() {
		if err := l.sparsify(progress); err != nil {
			return res, err
		}
		res.After, _ = hostBlocks(of)
		res.FileAfter = res.FileBefore
		return res, nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return res, fmt.Errorf("vhd: %s: compact: the image has %d hard links; rewriting it would split them", path, st.Nlink)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".vhd-compact-"+hex.EncodeToString(rnd[:]))
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return res, fmt.Errorf("vhd: %w", err)
	}
	done := false
	defer func() {
		if !done {
			nf.Close()
			os.Remove(tmp)
		}
	}()
	freed, err := l.rewriteDynamic(nf, belowHasData, progress)
	if err != nil {
		return res, err
	}
	res.BlocksFreed = freed
	if err := nf.Sync(); err != nil {
		return res, fmt.Errorf("vhd: %s: sync: %w", tmp, err)
	}
	if err := verify(tmp); err != nil {
		return res, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		nf.Chown(int(st.Uid), int(st.Gid)) // best effort: only root may give files away
	}
	if err := nf.Chmod(fi.Mode().Perm()); err != nil {
		return res, fmt.Errorf("vhd: %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, fmt.Errorf("vhd: %w", err)
	}
	done = true
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	nfi, _ := nf.Stat()
	res.FileAfter = nfi.Size()
	res.After, _ = hostBlocks(nf)
	nf.Close()
	return res, nil
}

// sparsify punches the all-zero pages of a fixed disk's data area.
func (l *Layer) sparsify(progress func(int64)) error {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for off := int64(0); off < l.size; {
		st, k := l.fixedExtent(off, l.size-off)
		end := off + k
		if st != lay.Data {
			progress(end - off)
			off = end
			continue
		}
		for off < end {
			n := min(chunk-off%chunk, end-off)
			p := buf[:n]
			if err := l.readData(p, off); err != nil {
				return err
			}
			// Runs of whole zero pages.
			for a := int64(0); a < n; {
				pa := off + a
				if pa%4096 != 0 || a+4096 > n || !isZero(p[a:a+4096]) {
					a = min(roundUp(pa+1, 4096)-off, n)
					continue
				}
				b := a + 4096
				for b+4096 <= n && isZero(p[b:b+4096]) {
					b += 4096
				}
				if err := l.punchFile(pa, b-a); err != nil {
					return err
				}
				a = b
			}
			progress(n)
			off += n
		}
	}
	if l.onFree != nil {
		l.onFree(0, 0) // the file's holes changed
	}
	return l.sync()
}

// rewriteDynamic writes the compacted copy of l into nf and returns the
// number of blocks dropped.
func (l *Layer) rewriteDynamic(nf *os.File, belowHasData func(off, n int64) bool, progress func(int64)) (int64, error) {
	h := *l.hdr
	maxEnt := int64(h.MaxTableEntries)
	batOff := int64(footerSize + headerSize)
	pos := batOff + roundUp(maxEnt*4, SectorSize)
	// Parent locators, each with its reserved space.
	var locData [][]byte
	var locOff []int64
	for i := range h.Locators {
		loc := &h.Locators[i]
		if !loc.used() {
			continue
		}
		space := max(loc.dataSpaceBytes(), int64(loc.DataLength))
		if loc.DataOffset > uint64(l.fileSize) || space > l.fileSize-int64(loc.DataOffset) {
			return 0, fmt.Errorf("vhd: %s: compact: parent locator %d (%s) lies outside the file; vhd check", l.path, i, fourCC(loc.Code))
		}
		b := make([]byte, space)
		if err := l.readAtFull(b, int64(loc.DataOffset), "parent locator "+fourCC(loc.Code)); err != nil {
			return 0, err
		}
		loc.DataOffset = uint64(pos)
		locData, locOff = append(locData, b), append(locOff, pos)
		pos += roundUp(space, SectorSize)
	}
	h.TableOffset = uint64(batOff)
	w := func(p []byte, off int64, what string) error {
		if _, err := nf.WriteAt(p, off); err != nil {
			return fmt.Errorf("vhd: %s: writing %s: %w", nf.Name(), what, err)
		}
		return nil
	}
	hraw, _ := h.MarshalBinary()
	if err := w(l.footerRaw[:], 0, "footer copy"); err != nil {
		return 0, err
	}
	if err := w(hraw, footerSize, "dynamic header"); err != nil {
		return 0, err
	}
	for i, b := range locData {
		if err := w(b, locOff[i], "parent locator"); err != nil {
			return 0, err
		}
	}
	bat := make([]byte, roundUp(maxEnt*4, SectorSize))
	for i := range bat {
		bat[i] = 0xFF
	}
	area := make([]byte, l.bitmapSize+l.blockSize)
	var freed int64
	for blk := range l.nblocks {
		e := l.entry(blk)
		if e == unallocated {
			progress(min(l.blockSize, l.size-blk*l.blockSize))
			continue
		}
		start, bm, err := l.block(blk, e)
		if err != nil {
			return 0, err
		}
		nsec := l.sectorsIn(blk)
		clear(area)
		bits := area[:(nsec+7)/8]
		copy(bits, bm.expand(nsec))
		data := area[l.bitmapSize : l.bitmapSize+nsec*SectorSize]
		if err := l.readData(data, start+l.bitmapSize); err != nil {
			return 0, err
		}
		for s := range nsec { // sectors not present: zeros
			if !bm.has(s) {
				clear(data[s*SectorSize : (s+1)*SectorSize])
			}
		}
		off := blk * l.blockSize
		if bm.empty || (isZero(data) && (l.footer.DiskType == TypeDynamic || !belowHasData(off, nsec*SectorSize))) {
			freed++
			progress(nsec * SectorSize)
			continue
		}
		p := roundUp(pos+l.bitmapSize, 4096) - l.bitmapSize
		if p/SectorSize >= int64(unallocated) {
			return 0, fmt.Errorf("%w: %s would grow past the 2 TiB a BAT entry can address", ErrUnsupported, l.path)
		}
		if err := w(area[:l.bitmapSize], p, "sector bitmap"); err != nil {
			return 0, err
		}
		// Only the non-zero pages: the new file stays sparse elsewhere.
		for a := 0; a < len(data); {
			b := min(a+4096, len(data))
			if isZero(data[a:b]) {
				a = b
				continue
			}
			for b < len(data) && !isZero(data[b:min(b+4096, len(data))]) {
				b = min(b+4096, len(data))
			}
			if err := w(data[a:b], p+l.bitmapSize+int64(a), "data"); err != nil {
				return 0, err
			}
			a = b
		}
		binary.BigEndian.PutUint32(bat[4*blk:], uint32(p/SectorSize))
		pos = p + l.bitmapSize + l.blockSize
		progress(nsec * SectorSize)
	}
	if err := w(bat, batOff, "BAT"); err != nil {
		return 0, err
	}
	if err := w(l.footerRaw[:], pos, "footer"); err != nil {
		return 0, err
	}
	if err := nf.Truncate(pos + footerSize); err != nil {
		return 0, fmt.Errorf("vhd: %s: %w", nf.Name(), err)
	}
	return freed, nil
}
