package format

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vhdmount/vhdmount/format/vhd"
)

// RelinkResult says what Relink wrote.
type RelinkResult = vhd.RelinkResult

// Relink points the differencing disk at child to its parent at newParent
// (moved or renamed), whose unique id must be the one child records: the
// W2ku (absolute) and W2ru (relative) locators are rewritten, or added in a
// free slot when missing, a MacX locator is rewritten when present, and the
// header's parent name becomes the path relative to child's directory (the
// absolute path when the relative one does not fit its 256 UTF-16 units).
// Every other field of the footer and the header is kept. opts may be nil;
// its OpenFile is used.
//
// Crash safety: a locator whose new path fits its reserved space is written
// there first: the header does not yet cover the longer payload, and a
// reader sees the old header. One that does not fit gets new space past
// everything the file holds: the footer is first written past that space
// (the file always ends with a footer), then the payloads into it, where
// nothing refers to them yet. After a sync, the header, with its checksum, is
// written in one write of its 1024 bytes, and synced: only then does the
// image name the new path. A crash before the header write leaves the image
// as it was (plus unreferenced space), and after it, relinked.
func Relink(child, newParent string, opts *Options) (*RelinkResult, error) {
	o := Options{}
	if opts != nil {
		o.OpenFile = opts.OpenFile
	}
	if abs, err := filepath.Abs(child); err == nil {
		child = abs
	}
	if abs, err := filepath.Abs(newParent); err == nil {
		newParent = abs
	}
	if err := refuseVHDX(&o, child, "relink"); err != nil {
		return nil, err
	}
	if err := refuseVHDX(&o, newParent, "a VHDX parent of a VHD child"); err != nil {
		return nil, err
	}
	cl, _, err := openLocked(child, &o, "it is open for writing elsewhere (a mount?)")
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if cl.Type() != "differencing" {
		return nil, fmt.Errorf("vhd: %s: not a differencing disk: it has no parent to relink", child)
	}
	if sameFile(newParent, child) {
		return nil, fmt.Errorf("vhd: %s: %w: an image cannot be its own parent", child, ErrChain)
	}
	// The new parent must open (its own parents may still be missing: they
	// can be relinked after) and carry the unique id the child records.
	po := o
	po.ReadOnly, po.AllowMissingParent = true, true
	pd, err := Open(newParent, &po)
	if err != nil {
		return nil, err
	}
	pl, ok := pd.layers[0].(*vhd.Layer)
	if !ok {
		pd.Close()
		return nil, fmt.Errorf("vhd: %s: %w: a VHD's parent must be a VHD", newParent, ErrUnsupported)
	}
	if err := cl.MatchParent(pl); err != nil {
		pd.Close()
		return nil, fmt.Errorf("vhd: %s is not the parent of %s: %w (%v)", newParent, child, ErrParentMismatch, err)
	}
	pd.Close()

	return cl.Relink(newParent)
}

// sameFile reports whether a and b name the same file.
func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}
