package format

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
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
	// Through a symbolic link, the file written is its target: the relative
	// path is recorded from the target's directory, where the image lives.
	if real, err := filepath.EvalSymlinks(child); err == nil {
		child = real
	}
	if abs, err := filepath.Abs(newParent); err == nil {
		newParent = abs
	}
	childX, parentX := isVHDX(&o, child), isVHDX(&o, newParent)
	if !parentX {
		// Say why it is not a VHDX when it is not even a readable regular
		// file (missing, a directory, a FIFO, a device).
		f, err := o.openFile(newParent, false)
		if err != nil {
			return nil, fmt.Errorf("vhd: the new parent: %w", err)
		}
		f.Close()
	}
	if childX != parentX {
		kind := map[bool]string{true: "VHDX", false: "VHD"}
		return nil, fmt.Errorf("vhd: %s: %w: %s is a %s, the child a %s: a child's parent must have its format",
			child, ErrParentMismatch, newParent, kind[parentX], kind[childX])
	}
	if childX {
		return relinkVHDX(child, newParent, &o)
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

// isVHDX reports whether path opens and starts as a VHDX file.
func isVHDX(opts *Options, path string) bool {
	f, err := opts.openFile(path, false)
	if err != nil {
		return false // the open that follows reports it
	}
	defer f.Close()
	var b [8]byte
	n, _ := f.ReadAt(b[:], 0)
	return vhdx.Probe(b[:n])
}

// relinkVHDX is Relink for a VHDX child: newParent must be a VHDX whose
// current DataWriteGuid is the child's parent_linkage (or a non-zero
// parent_linkage2); the child's parent locator is rewritten in the
// crash-safe order vhdx's RewriteLocator describes.
func relinkVHDX(child, newParent string, o *Options) (*RelinkResult, error) {
	f, err := o.openFile(child, true)
	if err != nil {
		return nil, fmt.Errorf("vhd: %w", err)
	}
	if err := lockFile(f, true); err != nil {
		f.Close()
		return nil, lockErr(child, err, "it is open for writing elsewhere (a mount?)")
	}
	if sameFile(newParent, child) {
		f.Close()
		return nil, fmt.Errorf("vhd: %s: %w: an image cannot be its own parent", child, ErrChain)
	}
	// Read-only first: a non-differencing or mismatched child is refused
	// before the read-write open updates anything.
	cl, err := vhdx.Open(child, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		f.Close()
		return nil, err
	}
	if cl.Parent() == nil {
		f.Close()
		return nil, fmt.Errorf("vhd: %s: not a differencing disk: it has no parent to relink", child)
	}
	po := *o
	po.ReadOnly, po.AllowMissingParent = true, true
	pd, err := Open(newParent, &po)
	if err != nil {
		f.Close()
		return nil, err
	}
	err = cl.MatchParent(pd.layers[0])
	pd.Close()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vhd: %s is not the parent of %s: %w (%v)", newParent, child, ErrParentMismatch, err)
	}
	wl, err := vhdx.Open(child, f, vhdx.Options{})
	if err != nil {
		f.Close()
		return nil, err
	}
	defer wl.Close()
	r, err := wl.Relink(newParent)
	if err != nil {
		return nil, err
	}
	res := &RelinkResult{Child: r.Child, Parent: r.Parent, HeaderName: r.RelativePath}
	res.InPlace = []string{"relative_path", "absolute_win32_path"}
	return res, nil
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
