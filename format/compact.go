package format

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// CompactOptions control Compact.
type CompactOptions struct {
	// Open, if set, is how the image (and its chain) is opened; ReadOnly and
	// IgnoreChecksums are ignored.
	Open *Options
	// Progress, if set, is called with the number of bytes of the virtual
	// disk just processed; the calls add up to the disk's size.
	Progress func(n int64)
}

// CompactResult says what Compact did.
type CompactResult struct {
	Before, After int64 // bytes the host filesystem stored for the image (st_blocks)
	FileBefore    int64 // file sizes
	FileAfter     int64
	BlocksFreed   int64 // blocks released (dynamic and differencing)
}

// Compact gives back the space of the image at path that holds nothing the
// disk shows. The image is opened for writing, so an image in use (or a
// damaged one) is refused.
//
// A dynamic or differencing image is rewritten beside itself: same footer
// (unique id, size, creator, timestamps), same header and parent locators,
// a BAT right after the header, then the blocks, in order and without gaps;
// blocks that show only zeros (in a differencing disk: no sector present,
// or only zero sectors over a parent that stores nothing there) are
// dropped. The new file is read back and compared with the image, synced,
// given the image's mode, and renamed over it; until then the image is
// untouched, so a crash leaves it as it was (and a stray temporary file
// named .NAME.vhd-compact-*). An image with several hard links is refused
// (the rename would split them); a symbolic link is followed.
//
// A fixed image is compacted in place: its all-zero 4 KiB pages are punched
// out of the file, which changes nothing it reads.
func Compact(path string, o CompactOptions) (res CompactResult, err error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	opts := &Options{}
	if o.Open != nil {
		*opts = *o.Open
	}
	opts.ReadOnly, opts.IgnoreChecksums = false, false
	d, err := Open(path, opts)
	if errors.Is(err, ErrFormatReadOnly) {
		return res, fmt.Errorf("vhd: %s: %w", path, &kindOf{"compacting VHDX images is not supported yet", ErrUnsupported})
	}
	if err != nil {
		return res, err
	}
	defer func() {
		if d != nil {
			if cerr := d.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}
	}()
	l, err := d.vhdTop(path, "compact")
	if err != nil {
		return res, err
	}
	progress := o.Progress
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
		if err := d.sparsifyFixed(l, progress); err != nil {
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
	freed, err := d.rewriteDynamic(l, nf, progress)
	if err != nil {
		return res, err
	}
	res.BlocksFreed = freed
	if err := nf.Sync(); err != nil {
		return res, fmt.Errorf("vhd: %s: sync: %w", tmp, err)
	}
	if err := d.sameAs(tmp, opts); err != nil {
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

// sparsifyFixed punches the all-zero pages of a fixed disk's data area.
func (d *Disk) sparsifyFixed(l *layer, progress func(int64)) error {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for off := int64(0); off < l.size; {
		data, end := d.Extent(off)
		if !data {
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
	d.allocGen.Add(1)
	return l.sync()
}

// rewriteDynamic writes the compacted copy of l into nf and returns the
// number of blocks dropped.
func (d *Disk) rewriteDynamic(l *layer, nf *os.File, progress func(int64)) (int64, error) {
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
		if bm.empty || (isZero(data) && (l.footer.DiskType == TypeDynamic || !d.belowHasData(off, nsec*SectorSize))) {
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

// sameAs opens the compacted file (over the same parents) and compares
// what it shows with the disk, and its structure.
func (d *Disk) sameAs(tmp string, opts *Options) error {
	o := *opts
	o.ReadOnly = true
	o.Parent = ""
	if len(d.layers) > 1 {
		o.Parent = d.layers[1].Path()
	}
	n, err := Open(tmp, &o)
	if err != nil {
		return fmt.Errorf("vhd: compact: the rewritten image does not open: %w", err)
	}
	defer n.Close()
	if probs := n.Check(); len(probs) > 0 {
		return fmt.Errorf("vhd: compact: the rewritten image has problems: %v", probs[0])
	}
	if n.Size() != d.Size() {
		return errors.New("vhd: compact: BUG: the rewritten image has another size")
	}
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < d.size; {
		data, end := d.Extent(off)
		if !data {
			off = end
			continue
		}
		for off < end {
			k := min(int64(len(a)), end-off)
			if err := d.readLayer(0, a[:k], off); err != nil {
				return err
			}
			if err := n.readLayer(0, b[:k], off); err != nil {
				return err
			}
			if !bytes.Equal(a[:k], b[:k]) {
				return fmt.Errorf("vhd: compact: BUG: the rewritten image differs near offset %d; the image is left as it was", off)
			}
			off += k
		}
	}
	return nil
}
