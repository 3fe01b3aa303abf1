package format

import (
	"bytes"
	"fmt"

	"github.com/vhdmount/vhdmount/format/vhdx"
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

// Resize changes the virtual size of the VHD or VHDX at path to size (VHD:
// a multiple of 512, at most MaxVirtualSize; VHDX: a multiple of its logical
// sector size, at most 64 TiB) and returns the old size. The image is opened
// for writing, so an image in use is refused (ErrLocked), as is a damaged
// one. Growing adds zeros at the end. A differencing disk may grow past its
// parent: the tail reads as zeros.
//
//   - VHD, fixed: the new footer is written at the new end and synced; only then
//     is the old footer (now inside the data area) zeroed. A crash in
//     between leaves a valid disk of the new size whose 512 bytes at the old
//     end still hold the old footer. Shrinking (the range cut off must read
//     as zeros) writes the footer at the new end, syncs, then truncates the
//     file; a crash in between leaves the disk at its old size with the new
//     footer's 512 bytes at the new end, where zeros were.
//   - VHD, dynamic and differencing: the sector bits of the last block past the
//     old end are cleared first (and that data zeroed); the BAT grows in
//     place when MaxTableEntries allows, else a new BAT is written past
//     everything (with the footer moved after it) and synced before the
//     header points at it; then the footer and its copy at offset 0 get the
//     new size. Shrinking is refused while any block or sector past the new
//     end is allocated. A crash between the two footer writes leaves an image
//     of the new size whose copy at offset 0 differs (vhd check says so).
//   - VHDX (fixed, dynamic, differencing): see vhdx.Layer.Resize for the
//     steps. A differencing VHDX whose parents show anything but zeros
//     past its end is not grown (they would show through the new tail).
func Resize(path string, size int64, o ResizeOptions) (old int64, err error) {
	opts := &Options{}
	if o.Open != nil {
		*opts = *o.Open
	}
	opts.ReadOnly, opts.IgnoreChecksums = false, false
	d, err := Open(path, opts)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := d.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if xl, ok := d.w.(*vhdx.Layer); ok {
		if size > xl.Size() && len(d.layers) > 1 {
			if err := d.belowZero(xl.Size(), min(size, d.layers[1].Size())); err != nil {
				return xl.Size(), err
			}
		}
		below := int64(0)
		if len(d.layers) > 1 {
			below = d.layers[1].Size()
		}
		return xl.Resize(size, o.Shrink, below)
	}
	if d.w == nil && d.layers[0].Format() == "vhdx" {
		if d.missing != nil {
			return 0, d.missing
		}
		return 0, ErrReadOnly
	}
	l, err := d.vhdTop(path, "resize")
	if err != nil {
		return 0, err
	}
	return l.Resize(size, o.Shrink)
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

// belowZero returns an error naming the first offset of [from, to) where
// the chain below the top shows anything but zeros.
func (d *Disk) belowZero(from, to int64) error {
	const step = 1 << 20
	buf := make([]byte, step)
	zero := make([]byte, step)
	for pos := from; pos < to; {
		n := min(to-pos, 1<<30)
		if !d.belowHasData(pos, n) {
			pos += n
			continue
		}
		for end := pos + n; pos < end; {
			k := min(end-pos, step)
			if d.belowHasData(pos, k) {
				if _, err := (belowView{d}).ReadAt(buf[:k], pos); err != nil {
					return err
				}
				if !bytes.Equal(buf[:k], zero[:k]) {
					i := pos
					for buf[i-pos] == 0 {
						i++
					}
					return fmt.Errorf("vhd: %s: cannot grow past %d bytes: its parent shows data at offset %d, which would show through the new end (vhd convert, or commit first)", d.layers[0].Path(), from, i)
				}
			}
			pos += k
		}
	}
	return nil
}
