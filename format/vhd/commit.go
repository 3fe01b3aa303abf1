package vhd

import (
	"fmt"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// This file holds what commit (package format) needs of a child layer it
// empties into its parent.

// StoredBytes returns the bytes of data the layer stores (sectors whose
// bitmap bits are set).
func (l *Layer) StoredBytes() (int64, error) {
	var total int64
	var runs []lay.Run
	for blk := range l.nblocks {
		if l.entry(blk) == unallocated {
			continue
		}
		off0 := blk * l.blockSize
		var err error
		if runs, err = l.Map(runs[:0], off0, min(l.blockSize, l.size-off0)); err != nil {
			return 0, err
		}
		for _, r := range runs {
			if r.State == lay.Data {
				total += r.Len
			}
		}
	}
	return total, nil
}

// metaEnd returns where the layer's metadata ends: past the footer copy,
// header, BAT, batmap and every locator's reserved space, rounded up to a
// sector.
func (l *Layer) metaEnd() int64 {
	var end int64
	for _, m := range l.meta {
		end = max(end, m.reserve)
	}
	for i := range l.hdr.Locators {
		loc := &l.hdr.Locators[i]
		if loc.used() && loc.DataOffset <= uint64(l.fileSize) {
			end = max(end, int64(loc.DataOffset)+max(loc.dataSpaceBytes(), int64(loc.DataLength)))
		}
	}
	return roundUp(end, SectorSize)
}

// Empty resets every BAT entry of a dynamic or differencing layer to
// unallocated and gives the blocks' space back. Order: a batmap is cleared
// (its bits claim blocks fully present), then the whole BAT is written in
// one write and synced; only then, when no entry names a block any more, is
// a copy of the footer written where the metadata ends, synced, and the
// file truncated after it.
func (l *Layer) Empty() error {
	if l.readOnly {
		return ErrReadOnly
	}
	if l.fixed() {
		return fmt.Errorf("vhd: %s: BUG: Empty on a fixed disk", l.path)
	}
	if l.batmapOff != 0 {
		if err := l.writeFile(make([]byte, l.batmapSize), l.batmapOff, "batmap"); err != nil {
			return err
		}
		// The batmap header's checksum (at +24): the one's complement of
		// the byte sum of the map, all zeros now.
		if err := l.writeFile([]byte{0xFF, 0xFF, 0xFF, 0xFF}, l.batmapHdrOff+24, "batmap checksum"); err != nil {
			return err
		}
	}
	table := make([]byte, int64(l.hdr.MaxTableEntries)*4)
	for i := range table {
		table[i] = 0xFF
	}
	if err := l.writeFile(table, int64(l.hdr.TableOffset), "BAT"); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	for blk := range l.bat {
		l.bat[blk] = unallocated
		l.bitmaps[blk].Store(nil)
	}
	end := l.metaEnd()
	if end >= l.footerOff {
		return nil
	}
	if err := l.writeFile(l.footerRaw[:], end, "footer"); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	if err := l.f.Truncate(end + footerSize); err != nil {
		return fmt.Errorf("vhd: %s: truncate to %d bytes: %w", l.path, end+footerSize, err)
	}
	l.footerOff = end
	l.dataLimit.Store(end)
	return l.sync()
}
