package format

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ResizeOptions control Resize.
type ResizeOptions struct {
	// Shrink allows a size smaller than the current one; it is refused
	// anyway when anything is stored past the new end.
	Shrink bool
	// Open, if set, is how the image (and its chain) is opened; ReadOnly and
	// IgnoreChecksums are ignored.
	Open *Options
}

// Resize changes the virtual size of the VHD at path to size (a multiple of
// 512, at most MaxVirtualSize) and returns the old size. The image is opened
// for writing, so an image in use is refused (ErrLocked), as is a damaged
// one. Growing adds zeros at the end. A differencing disk may grow past its
// parent: the tail reads as zeros.
//
//   - Fixed: the new footer is written at the new end and synced; only then
//     is the old footer (now inside the data area) zeroed. A crash in
//     between leaves a valid disk of the new size whose 512 bytes at the old
//     end still hold the old footer. Shrinking (the range cut off must read
//     as zeros) writes the footer at the new end, syncs, then truncates the
//     file; a crash in between leaves the disk at its old size with the new
//     footer's 512 bytes at the new end, where zeros were.
//   - Dynamic and differencing: the sector bits of the last block past the
//     old end are cleared first (and that data zeroed); the BAT grows in
//     place when MaxTableEntries allows, else a new BAT is written past
//     everything (with the footer moved after it) and synced before the
//     header points at it; then the footer and its copy at offset 0 get the
//     new size. Shrinking is refused while any block or sector past the new
//     end is allocated. A crash between the two footer writes leaves an image
//     of the new size whose copy at offset 0 differs (vhd check says so).
func Resize(path string, size int64, o ResizeOptions) (old int64, err error) {
	opts := &Options{}
	if o.Open != nil {
		*opts = *o.Open
	}
	opts.ReadOnly, opts.IgnoreChecksums = false, false
	d, err := Open(path, opts)
	if errors.Is(err, ErrFormatReadOnly) {
		return 0, fmt.Errorf("vhd: %s: %w", path, &kindOf{"resizing VHDX images is not supported yet", ErrUnsupported})
	}
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := d.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	l, err := d.vhdTop(path, "resize")
	if err != nil {
		return 0, err
	}
	old = l.size
	if size <= 0 || size%SectorSize != 0 || size > MaxVirtualSize {
		return old, fmt.Errorf("vhd: size %d is not a positive multiple of 512 up to %d (2040 GiB)", size, int64(MaxVirtualSize))
	}
	switch {
	case size == old:
		return old, nil
	case size < old && !o.Shrink:
		return old, fmt.Errorf("vhd: %s: %d bytes is smaller than the disk (%d bytes); shrinking must be asked for", path, size, old)
	}
	if l.footerSrc != FooterAtEnd {
		return old, fmt.Errorf("vhd: %s: resize: %w: the footer was read from the %s, not the end of the file (vhd check)", path, ErrCorrupt, l.footerSrc)
	}
	nf := l.footer
	nf.CurrentSize = uint64(size)
	nf.Cylinders, nf.Heads, nf.SectorsPerTrack = Geometry(size)
	raw, _ := nf.MarshalBinary()
	if l.fixed() {
		err = d.resizeFixed(l, size, raw)
	} else {
		err = d.resizeDynamic(l, size, raw)
	}
	return old, err
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func (l *layer) sync() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("vhd: %s: sync: %w", l.path, err)
	}
	return nil
}

func (d *Disk) resizeFixed(l *layer, size int64, footer []byte) error {
	old := l.size
	if l.footerOff != old || l.fileSize != old+footerSize {
		return fmt.Errorf("vhd: %s: resize: %w: %d bytes between the data and the footer; vhd convert -O fixed instead", l.path, ErrUnsupported, l.footerOff-old)
	}
	if size > old {
		if err := l.writeFile(footer, size, "footer"); err != nil {
			return err
		}
		if err := l.sync(); err != nil {
			return err
		}
		if err := l.zeroFile(old, footerSize); err != nil {
			return err
		}
		return l.sync()
	}
	if off, err := d.firstNonZero(size, old); err != nil {
		return err
	} else if off >= 0 {
		return fmt.Errorf("vhd: %s: cannot shrink to %d bytes: data at offset %d", l.path, size, off)
	}
	if err := l.writeFile(footer, size, "footer"); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	if err := l.f.Truncate(size + footerSize); err != nil {
		return fmt.Errorf("vhd: %s: truncate: %w", l.path, err)
	}
	return l.sync()
}

// firstNonZero returns the first offset in [from, to) of the disk that does
// not read as zero, or -1.
func (d *Disk) firstNonZero(from, to int64) (int64, error) {
	buf := make([]byte, 1<<20)
	for off := from; off < to; {
		if data, end := d.Extent(off); !data {
			off = min(end, to)
			continue
		}
		p := buf[:min(int64(len(buf)), to-off)]
		if err := d.readLayer(0, p, off); err != nil {
			return 0, err
		}
		for i, c := range p {
			if c != 0 {
				return off + int64(i), nil
			}
		}
		off += int64(len(p))
	}
	return -1, nil
}

func (d *Disk) resizeDynamic(l *layer, size int64, footer []byte) error {
	old, bs := l.size, l.blockSize
	nOld, nNew := l.nblocks, (size+bs-1)/bs
	if size < old {
		// Nothing may be stored past the new end.
		for blk := nNew; blk < nOld; blk++ {
			if l.entry(blk) != unallocated {
				return fmt.Errorf("vhd: %s: cannot shrink to %d bytes: block %d (offset %d) is allocated", l.path, size, blk, blk*bs)
			}
		}
		if blk := nNew - 1; size%bs != 0 && l.entry(blk) != unallocated {
			_, bm, err := l.block(blk, l.entry(blk))
			if err != nil {
				return err
			}
			for s := (size - blk*bs) / SectorSize; s < l.sectorsIn(blk); s++ {
				if bm.has(s) {
					return fmt.Errorf("vhd: %s: cannot shrink to %d bytes: sector %d is allocated", l.path, size, blk*bs/SectorSize+s)
				}
			}
		}
		return l.writeFooters(footer)
	}
	// The last block, if short of a whole block, must have room for the
	// whole block, and its sectors past the old end must not show.
	if last := nOld - 1; old%bs != 0 && l.entry(last) != unallocated {
		if err := l.clearTail(last, old-last*bs); err != nil {
			return err
		}
	}
	to := int64(l.hdr.TableOffset)
	if nNew <= int64(l.hdr.MaxTableEntries) && l.free(to+4*nOld, to+4*nNew, -1) {
		ent := make([]byte, 4*(nNew-nOld))
		for i := range ent {
			ent[i] = 0xFF
		}
		if err := l.writeFile(ent, to+4*nOld, "BAT"); err != nil {
			return err
		}
	} else if err := l.moveBAT(nNew); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	return l.writeFooters(footer)
}

// free reports whether [a, b) of the file overlaps no metadata area other
// than the BAT, no block other than skip, and ends before the footer.
func (l *layer) free(a, b, skip int64) bool {
	if b > l.footerOff {
		return false
	}
	for _, m := range l.meta {
		if m.what != "BAT" && a < m.end && b > m.start {
			return false
		}
	}
	for blk := range l.nblocks {
		if e := l.entry(blk); e != unallocated && blk != skip {
			s := int64(e) * SectorSize
			if a < s+l.bitmapSize+l.blockSize && b > s {
				return false
			}
		}
	}
	return true
}

// clearTail makes the sectors of block blk from byte in on read as
// nothing stored: their bits are cleared and their data zeroed, after
// checking the block has room for all its sectors in the file.
func (l *layer) clearTail(blk, in int64) error {
	start, err := l.blockOffset(blk, l.entry(blk))
	if err != nil {
		return err
	}
	data := start + l.bitmapSize
	if !l.free(data+in, data+l.blockSize, blk) {
		return fmt.Errorf("vhd: %s: resize: %w: the last block (%d) is stored short of a whole block, with something else after it; vhd convert instead", l.path, ErrUnsupported, blk)
	}
	nbits := l.blockSize / SectorSize
	bits := make([]byte, (nbits+7)/8)
	if err := l.readAtFull(bits, start, fmt.Sprintf("sector bitmap of block %d", blk)); err != nil {
		return err
	}
	for s := in / SectorSize; s < nbits; s++ {
		bits[s/8] &^= 0x80 >> (s % 8)
	}
	if err := l.writeFile(bits, start, fmt.Sprintf("sector bitmap of block %d", blk)); err != nil {
		return err
	}
	if err := l.zeroFile(data+in, l.blockSize-in); err != nil {
		return err
	}
	return l.sync()
}

// moveBAT writes a BAT of at least n entries past everything in the file
// (the footer moved after it first), syncs, then points the header at it.
func (l *layer) moveBAT(n int64) error {
	entries := roundUp(n, SectorSize/4)
	if entries > int64(unallocated) {
		return fmt.Errorf("vhd: %s: resize: %w: %d BAT entries", l.path, ErrUnsupported, entries)
	}
	pos := roundUp(max(l.dataEnd, l.footerOff), SectorSize)
	bat := make([]byte, entries*4)
	for i := range entries {
		e := uint32(unallocated)
		if i < l.nblocks {
			e = l.entry(i)
		}
		binary.BigEndian.PutUint32(bat[4*i:], e)
	}
	// The footer moves past the new BAT first, so the file always ends
	// with one; the BAT then goes where nothing refers (the old footer's
	// place among it), and is synced before the header points at it.
	end := pos + int64(len(bat))
	if err := l.writeFile(l.footerRaw[:], end, "footer"); err != nil {
		return err
	}
	if err := l.writeFile(bat, pos, "BAT"); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	l.footerOff = end
	h := *l.hdr
	h.TableOffset, h.MaxTableEntries = uint64(pos), uint32(entries)
	raw, _ := h.MarshalBinary()
	if err := l.writeFile(raw, l.hdrOff, "dynamic header"); err != nil {
		return err
	}
	return l.sync()
}

// writeFooters writes footer at the end of the file (where the footer
// is), then its copy at offset 0, syncing after each.
func (l *layer) writeFooters(footer []byte) error {
	if err := l.writeFile(footer, l.footerOff, "footer"); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	if err := l.writeFile(footer, 0, "footer copy"); err != nil {
		return err
	}
	return l.sync()
}
