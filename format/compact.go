package format

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
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
type CompactResult = vhd.CompactResult

// Compact gives back the space of the image at path that holds nothing the
// disk shows. The image is opened for writing, so an image in use (or a
// damaged one) is refused.
//
// A dynamic or differencing image is rewritten beside itself: for a VHD,
// the same footer (unique id, size, creator, timestamps), same header and
// parent locators, a BAT right after the header, then the blocks, in order
// and without gaps; for a VHDX, the same DataWriteGuid (children keep
// matching), a new FileWriteGuid, no log, the same metadata items and
// block size, then the blocks in order and without gaps (vhdx.Layer.Compact
// says more). Blocks that show only zeros (in a differencing disk: no
// sector present, or only zero sectors over a parent that stores nothing
// there) are dropped. The new file is read back and compared with the image, synced,
// given the image's mode, and renamed over it; until then the image is
// untouched, so a crash leaves it as it was (and a stray temporary file
// named .NAME.vhd-compact-* or .NAME.vhdx-compact-*). An image with several hard links is refused
// (the rename would split them); a symbolic link is followed.
//
// A fixed image is compacted in place: the all-zero 4 KiB pages of its data
// are punched out of the file (never a structure), which changes nothing
// it reads.
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
	verify := func(tmp string) error { return d.sameAs(tmp, opts) }
	if xl, ok := d.w.(*vhdx.Layer); ok {
		r, err := xl.Compact(d.belowHasData, verify, o.Progress)
		return CompactResult{Before: r.Before, After: r.After, FileBefore: r.FileBefore, FileAfter: r.FileAfter, BlocksFreed: r.BlocksFreed}, err
	}
	l, err := d.vhdTop(path, "compact")
	if err != nil {
		return res, err
	}
	return l.Compact(d.belowHasData, verify, o.Progress)
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
		// A range either side shows data in is compared: data the
		// rewritten image shows where the image showed none is a
		// difference too.
		data, end := d.Extent(off)
		ndata, nend := n.Extent(off)
		end = min(end, nend)
		if !data && !ndata {
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
