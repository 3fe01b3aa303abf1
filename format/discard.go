package format

import (
	"fmt"
	"io"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhd"
)

// Puncher is implemented by a File that can deallocate a range of itself
// (the range then reads as zeros and the file keeps its size), as
// fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE) does. An *os.File is
// punched with fallocate directly. PunchHole returns an error wrapping
// errors.ErrUnsupported when the file or its filesystem cannot do it.
type Puncher = vhd.Puncher

// Discard makes [off, off+n) of the virtual disk read as zeros and gives
// back the space it can, as a block device's discard (or write-zeroes) does.
// Only the top image is changed.
//
//   - Fixed disk: the range is punched out of the image file (whole 4 KiB
//     pages; zeros are written at the edges, and everywhere when the
//     filesystem cannot punch holes).
//   - Dynamic disk, or a differencing disk whose parents store nothing in
//     the range: the sector bitmap bits of the whole sectors in the range
//     are cleared and zeros are written into partly covered sectors (in a
//     dynamic disk, the whole range of the block's data is zeroed or
//     punched as well, for readers that ignore the bitmap); a block
//     left with no sector present goes back to unallocated (its BAT entry
//     becomes 0xFFFFFFFF) and its space is punched out of the file. That
//     space stays where it is: it is not reused for new blocks, which are
//     still appended at the end (vhd compact gives it back for good).
//   - Differencing disk whose parents store data in the range: zeros are
//     written into this image (allocating blocks as needed), since clearing
//     bits would let the parent's data show through.
//
// Crash safety: a block is unpublished (BAT entry written) before its space
// is punched; bits are cleared before the data they covered is punched. A
// crash at any point leaves an image that opens, checks clean, and shows
// each sector of the range either as it was or as zeros.
//
// A VHDX top layer follows the same contract with the format's own states
// (format/vhdx Layer.Discard): whole blocks become NOT_PRESENT, or ZERO in a
// child whose parents store data there, and are punched out of the file;
// parts of blocks are zeroed in place, their whole pages punched.
func (d *Disk) Discard(off, n int64) error {
	dl, ok := d.w.(discarder)
	if !ok {
		switch {
		case d.w != nil:
			return fmt.Errorf("%s: discard: %w for %s", d.layers[0].Path(), ErrUnsupported, upper(d.layers[0].Format()))
		case d.missing != nil:
			return d.missing
		}
		return ErrReadOnly
	}
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return fmt.Errorf("%w: discard of %d bytes at %d on a disk of %d bytes", ErrOutOfRange, n, off, d.size)
	}
	return dl.Discard(off, n, belowView{d}, d.belowHasData)
}

// discarder is a writable top layer that can discard a range (the VHD and
// VHDX layers).
type discarder interface {
	Discard(off, n int64, below io.ReaderAt, belowHasData func(off, n int64) bool) error
}

// vhdTop returns the top layer for an operation (op) that writes VHD
// structures: an error when the disk is read-only or its top is of another
// format. path names the image in the error.
func (d *Disk) vhdTop(path, op string) (*vhd.Layer, error) {
	if l, ok := d.w.(*vhd.Layer); ok {
		return l, nil
	}
	if f := d.layers[0].Format(); f != "vhd" {
		return nil, fmt.Errorf("vhd: %s: %s: %w: not supported for %s yet", path, op, ErrUnsupported, upper(f))
	}
	if d.missing != nil {
		return nil, d.missing
	}
	return nil, ErrReadOnly
}

// belowHasData reports whether a layer below the top stores data in
// [off, off+n) (at block granularity: a parent's allocated block counts).
func (d *Disk) belowHasData(off, n int64) bool {
	for pos, stop := off, off+n; pos < stop; {
		end := stop
		for _, l := range d.layers[1:] {
			if pos >= l.Size() {
				continue
			}
			st, m := layerExtent(l, pos, min(end, l.Size())-pos)
			if st == lay.Data {
				return true
			}
			end = pos + m
			if st == lay.Zero {
				break
			}
		}
		pos = end
	}
	return false
}
