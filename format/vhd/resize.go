package vhd

import (
	"encoding/binary"
	"fmt"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// Resize changes the virtual size of the layer to size (a multiple of 512,
// at most MaxVirtualSize) and returns the old size; shrink allows a smaller
// size, refused anyway while anything is stored past the new end. See
// format's Resize for the steps and their crash safety.
func (l *Layer) Resize(size int64, shrink bool) (old int64, err error) {
	if l.readOnly {
		return l.size, ErrReadOnly
	}
	path := l.path
	old = l.size
	if size <= 0 || size%SectorSize != 0 || size > MaxVirtualSize {
		return old, fmt.Errorf("vhd: size %d is not a positive multiple of 512 up to %d (2040 GiB)", size, int64(MaxVirtualSize))
	}
	switch {
	case size == old:
		return old, nil
	case size < old && !shrink:
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
		err = l.resizeFixed(size, raw)
	} else {
		err = l.resizeDynamic(size, raw)
	}
	return old, err
}

func (l *Layer) sync() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("vhd: %s: sync: %w", l.path, err)
	}
	return nil
}

func (l *Layer) resizeFixed(size int64, footer []byte) error {
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
	if off, err := l.firstNonZero(size, old); err != nil {
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

// firstNonZero returns the first offset in [from, to) of a fixed disk that
// does not read as zero, or -1.
func (l *Layer) firstNonZero(from, to int64) (int64, error) {
	buf := make([]byte, 1<<20)
	for off := from; off < to; {
		if st, n := l.fixedExtent(off, to-off); st != lay.Data {
			off += n
			continue
		}
		p := buf[:min(int64(len(buf)), to-off)]
		if err := l.readData(p, off); err != nil {
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

func (l *Layer) resizeDynamic(size int64, footer []byte) error {
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
func (l *Layer) free(a, b, skip int64) bool {
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
func (l *Layer) clearTail(blk, in int64) error {
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
func (l *Layer) moveBAT(n int64) error {
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
func (l *Layer) writeFooters(footer []byte) error {
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
