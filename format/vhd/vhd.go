package vhd

import (
	"errors"
	"fmt"
	"io"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// This file makes a VHD layer a lay.Layer, so the format-neutral chain can
// read it beside layers of other formats.

var (
	_ lay.Layer    = (*Layer)(nil)
	_ lay.Extenter = (*Layer)(nil)
)

// Path returns the file's absolute path.
func (l *Layer) Path() string { return l.path }

// Format returns "vhd".
func (l *Layer) Format() string { return "vhd" }

// Size returns the virtual size (the footer's CurrentSize).
func (l *Layer) Size() int64 { return l.size }

// SectorSize returns 512: VHD sectors are always 512 bytes.
func (l *Layer) SectorSize() int { return SectorSize }

// Close closes the file.
func (l *Layer) Close() error { return l.f.Close() }

// ReadData reads stored bytes from the file; a short file is corruption.
func (l *Layer) ReadData(p []byte, off int64) error { return l.readData(p, off) }

// readData reads from the layer's file; a short file is corruption.
func (l *Layer) readData(p []byte, off int64) error {
	n, err := l.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return formatErr(l.path, off+int64(n), "data", ErrCorrupt, "file ends inside a block (read %d of %d bytes at 0x%x)", n, len(p), off)
	}
	return fmt.Errorf("vhd: %s: read %d bytes at 0x%x: %w", l.path, len(p), off, err)
}

// appendRun appends r to runs, merging it into the last run when it
// continues it.
func appendRun(runs []lay.Run, r lay.Run) []lay.Run {
	if k := len(runs) - 1; k >= 0 {
		last := &runs[k]
		if last.State == r.State && (r.State != lay.Data || last.FileOff+last.Len == r.FileOff) {
			last.Len += r.Len
			return runs
		}
	}
	return append(runs, r)
}

// Map maps [off, off+n) of the virtual disk onto this file: fixed disks
// store everything; a dynamic or differencing disk stores a block's sectors
// whose bitmap bits are set, and asks the parent (zeros at the bottom of the
// chain) for the rest and for unallocated blocks.
func (l *Layer) Map(runs []lay.Run, off, n int64) ([]lay.Run, error) {
	if l.fixed() {
		return appendRun(runs, lay.Run{Len: n, State: lay.Data, FileOff: off}), nil
	}
	for n > 0 {
		blk, in := off/l.blockSize, off%l.blockSize
		m := min(n, l.blockSize-in)
		e := l.entry(blk)
		if e == unallocated {
			runs = appendRun(runs, lay.Run{Len: m, State: lay.Parent})
			off, n = off+m, n-m
			continue
		}
		start, bm, err := l.block(blk, e)
		if err != nil {
			return runs, err
		}
		data := start + l.bitmapSize
		switch {
		case bm.full:
			runs = appendRun(runs, lay.Run{Len: m, State: lay.Data, FileOff: data + in})
		case bm.empty:
			runs = appendRun(runs, lay.Run{Len: m, State: lay.Parent})
		default:
			end := in + m
			for pos := in; pos < end; {
				s := pos / SectorSize
				runEnd := min(bm.run(s, (end+SectorSize-1)/SectorSize)*SectorSize, end)
				r := lay.Run{Len: runEnd - pos, State: lay.Parent}
				if bm.has(s) {
					r.State, r.FileOff = lay.Data, data+pos
				}
				runs = appendRun(runs, r)
				pos = runEnd
			}
		}
		off, n = off+m, n-m
	}
	return runs, nil
}

// Extent reports whether the block at off is allocated in this file (Data)
// or not (Parent), and how far, up to n bytes, blocks stay in that state.
// A fixed disk follows the holes of its file (see fixedExtent).
func (l *Layer) Extent(off, n int64) (lay.State, int64) {
	if l.fixed() {
		return l.fixedExtent(off, n)
	}
	blk := off / l.blockSize
	alloc := l.entry(blk) != unallocated
	end := off + n
	for blk++; blk < l.nblocks && blk*l.blockSize < end && (l.entry(blk) != unallocated) == alloc; blk++ {
	}
	st := lay.Parent
	if alloc {
		st = lay.Data
	}
	return st, min(blk*l.blockSize, end) - off
}

// Parent lists where to look for a differencing disk's parent, in policy
// order (W2ru, W2ku, MacX, header name), each followed by its basename in
// the child's directory when the recorded path may not lead there.
func (l *Layer) Parent() *lay.ParentRef {
	if l.footer.DiskType != TypeDifferencing {
		return nil
	}
	ref := &lay.ParentRef{ID: l.hdr.ParentUniqueID.String()}
	for _, c := range l.parentCandidates() {
		for i, p := range c.paths {
			src := c.source
			if i >= c.direct {
				src += " (basename)"
			}
			ref.Candidates = append(ref.Candidates, lay.Candidate{Source: src, Raw: c.raw, Path: p})
		}
	}
	return ref
}

// MatchParent accepts p when it is a VHD whose unique id is the one this
// child records.
func (l *Layer) MatchParent(p lay.Layer) error {
	pl, ok := p.(*Layer)
	if !ok {
		return &lay.MismatchError{Detail: "it is a " + p.Format() + " image; a VHD's parent must be a VHD"}
	}
	if pl.footer.UniqueID != l.hdr.ParentUniqueID {
		return &lay.MismatchError{Detail: fmt.Sprintf("unique id %s, want %s", pl.footer.UniqueID, l.hdr.ParentUniqueID)}
	}
	return nil
}
