package vhd

import (
	"os"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// fixedExtent is Extent for a fixed disk: the data area follows the host
// file's own holes (SEEK_DATA/SEEK_HOLE), so a sparse fixed image reads as
// sparse. A hole is Zero (there is no parent to fall through to). A file the
// filesystem cannot tell about is Data throughout.
func (l *Layer) fixedExtent(off, n int64) (lay.State, int64) {
	f, ok := l.f.(*os.File)
	if !ok {
		return lay.Data, n
	}
	end := off + n // inside the data area: the caller keeps off+n <= Size()
	next, ok := seekOS(f, off, true)
	switch {
	case !ok:
		return lay.Data, n
	case next < 0 || next >= end: // no data in [off, end)
		return lay.Zero, n
	case next > off:
		return lay.Zero, next - off
	}
	hole, ok := seekOS(f, off, false)
	if !ok || hole <= off {
		return lay.Data, n
	}
	return lay.Data, min(hole, end) - off
}

// HostAllocated returns the bytes of a fixed disk's data area the host
// filesystem stores (st_blocks, less the footer's own block), when the
// file is an *os.File on a filesystem that says. It returns false for a
// dynamic or differencing disk, whose allocation its BAT tells.
func (l *Layer) HostAllocated() (int64, bool) {
	if !l.fixed() {
		return 0, false
	}
	f, ok := l.f.(*os.File)
	if !ok {
		return 0, false
	}
	b, ok := hostBlocks(f)
	if !ok {
		return 0, false
	}
	// The footer and anything after the data area sit in blocks of their own
	// (or share the last data block, then counted once here too).
	tail := roundUp(max(l.fileSize-l.size, 0), 4096)
	return min(max(b-tail, 0), l.size), true
}
