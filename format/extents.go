package format

// Extent reports whether the virtual disk at off is data or a hole, and where
// that run ends (exclusive, at most Size()). A hole is a range that no file of
// the chain stores: it reads as zeros. Data is any range some layer has
// allocated; it may still read as zeros. Granularity is the block (whole
// fixed disks are data). off must be in [0, Size()).
func (d *Disk) Extent(off int64) (data bool, end int64) {
	holeEnd := d.size
	for _, l := range d.layers {
		if off >= l.size {
			continue // nothing below this layer's end comes from it
		}
		alloc, runEnd := l.extent(off)
		if alloc {
			return true, min(runEnd, d.size)
		}
		holeEnd = min(holeEnd, runEnd)
	}
	return false, holeEnd
}

// extent returns whether off is allocated in this layer, and the end of the
// run of blocks in the same state.
func (l *layer) extent(off int64) (bool, int64) {
	if l.fixed() {
		return true, l.size
	}
	blk := off / l.blockSize
	alloc := l.entry(blk) != unallocated
	for blk++; blk < l.nblocks && (l.entry(blk) != unallocated) == alloc; blk++ {
	}
	return alloc, min(blk*l.blockSize, l.size)
}

// AllocatedBytes returns how many bytes of the virtual disk some layer of the
// chain stores (the sum of the data extents).
func (d *Disk) AllocatedBytes() int64 {
	var n int64
	for off := int64(0); off < d.size; {
		data, end := d.Extent(off)
		if data {
			n += end - off
		}
		off = end
	}
	return n
}
