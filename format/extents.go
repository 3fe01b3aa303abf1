package format

import lay "github.com/vhdmount/vhdmount/format/layer"

// extentWindow bounds how far one Extent call looks in each layer, so that
// walking the whole disk costs a pass over each layer's tables, never a
// pass per run (a fragmented parent under an empty child).
const extentWindow = 1 << 30

// Extent reports whether the virtual disk at off is data or a hole, and where
// that run ends (exclusive, at most Size()). A hole is a range that no file of
// the chain stores, or that a layer marks as zeros (a VHDX ZERO block): it
// reads as zeros. Data is any range some layer has allocated; it may still
// read as zeros. Granularity is the block (a fixed disk follows the holes
// of its file, at the filesystem's granularity). off
// must be in [0, Size()).
//
// Each step looks at most extentWindow ahead in every layer and steps merge
// while the state stays the same, so a call costs in proportion to the run
// it returns, and walking the whole disk one pass over the chain's tables.
func (d *Disk) Extent(off int64) (data bool, end int64) {
	d.extMu.Lock()
	defer d.extMu.Unlock()
	if d.hints == nil {
		d.hints = make([]extentHint, len(d.layers))
	}
	data, end = d.extentStep(off)
	for end < d.size && end-off >= extentWindow && (end-off)%extentWindow == 0 {
		more, next := d.extentStep(end)
		if more != data {
			break
		}
		end = next
	}
	return data, end
}

// extentStep is Extent looking at most extentWindow ahead.
func (d *Disk) extentStep(off int64) (data bool, end int64) {
	holeEnd := min(d.size, off+extentWindow)
	for i, l := range d.layers {
		if off >= l.Size() {
			continue // nothing at or past this layer's end comes from it
		}
		st, n := d.hintedExtent(i, off, min(holeEnd, l.Size())-off)
		switch st {
		case lay.Data:
			return true, off + n
		case lay.Zero:
			return false, off + n
		}
		holeEnd = off + n
	}
	return false, holeEnd
}

// extentHint remembers what a layer said of a range: walking the disk
// forward, each layer's tables are then read once, not once per run of the
// layers below it.
type extentHint struct {
	off, end int64
	st       lay.State
	gen      uint64 // allocGen when taken; the top layer's hint is dropped after a write allocates
}

// hintedExtent is layerExtent for layer i, answered from its hint when the
// hint covers off.
func (d *Disk) hintedExtent(i int, off, n int64) (lay.State, int64) {
	h := &d.hints[i]
	gen := d.allocGen.Load()
	if h.off <= off && off < h.end && (i > 0 || h.gen == gen) {
		return h.st, min(h.end, off+n) - off
	}
	st, m := layerExtent(d.layers[i], off, n)
	*h = extentHint{off, off + m, st, gen}
	return st, m
}

// layerExtent asks a layer how [off, off+n) starts, at block granularity when
// it can tell, else by mapping.
func layerExtent(l lay.Layer, off, n int64) (lay.State, int64) {
	if e, ok := l.(lay.Extenter); ok {
		return e.Extent(off, n)
	}
	runs, err := l.Map(nil, off, min(n, 4<<20)) // the first run is all that is used
	if err != nil || len(runs) == 0 {
		return lay.Data, n // unreadable: not a hole; the read reports it
	}
	return runs[0].State, runs[0].Len
}

// AllocatedBytes returns how many bytes of the virtual disk some layer of the
// chain stores (the sum of the data extents). It is computed once, in one
// pass over the chain's tables, and kept current by writes. A lone fixed
// disk asks its file each time: what the host filesystem stores of the data
// area (st_blocks), which follows writes into holes and discards.
func (d *Disk) AllocatedBytes() int64 {
	if len(d.layers) == 1 {
		if l, ok := d.layers[0].(hostAllocator); ok {
			if n, ok := l.HostAllocated(); ok {
				return n
			}
		}
	}
	d.allocOnce.Do(func() {
		var n int64
		for off := int64(0); off < d.size; {
			data, end := d.Extent(off)
			if data {
				n += end - off
			}
			off = end
		}
		d.allocated.Store(n)
	})
	return d.allocated.Load()
}

// hostAllocator is implemented by layers whose allocation is their host
// file's (a fixed VHD): HostAllocated returns the bytes of the virtual disk
// the host filesystem stores, when it can tell.
type hostAllocator interface {
	HostAllocated() (int64, bool)
}

// noteAlloc is called by the top layer when it allocates the virtual range
// [off, off+n): the bytes of it that no parent stored are new data. Either
// call with n == 0 only drops the top layer's extent hint.
func (d *Disk) noteAlloc(off, n int64) {
	d.allocated.Add(d.freshBytes(off, n))
	d.allocGen.Add(1)
}

// noteFree is called by the top layer when it unallocates the virtual range
// [off, off+n): the bytes of it that no parent stores are data no more.
func (d *Disk) noteFree(off, n int64) {
	d.allocated.Add(-d.freshBytes(off, n))
	d.allocGen.Add(1)
}

// freshBytes counts the bytes of [off, off+n) (clipped to the disk) that
// no parent stores.
func (d *Disk) freshBytes(off, n int64) int64 {
	n = min(n, d.size-off)
	fresh := n
	for pos := off; pos < off+n; {
		end := off + n
		data := false
		for _, l := range d.layers[1:] {
			if pos >= l.Size() {
				continue
			}
			st, m := layerExtent(l, pos, min(end, l.Size())-pos)
			if st != lay.Parent {
				data, end = st == lay.Data, pos+m
				break
			}
			end = pos + m
		}
		if data {
			fresh -= end - pos
		}
		pos = end
	}
	return fresh
}
