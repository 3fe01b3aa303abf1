package format

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// CommitOptions control Commit.
type CommitOptions struct {
	// Force commits although other children of the parent were found beside
	// it (what they show changes), and removes (Remove) a child that has
	// children of its own beside it.
	Force bool
	// Remove deletes the child once its data is in the parent, instead of
	// emptying it.
	Remove bool
	// Progress, if set, is called as data is copied with the bytes copied so
	// far and the total to copy.
	Progress func(done, total int64)
	// OpenFile opens a file of the chain, as Options.OpenFile.
	OpenFile func(path string, write bool) (File, error)

	// Tests replace the directory listing and file removal.
	readDir func(dir string) ([]string, error)
	remove  func(path string) error
}

// CommitResult says what Commit did.
type CommitResult struct {
	Child, Parent string // absolute paths
	Bytes         int64  // bytes of data copied into the parent
	Blocks        int64  // blocks of the child emptied
	Removed       bool   // the child was deleted
}

// SiblingError refuses a commit into a parent that other children share:
// their view of the disk would change. Siblings lists them.
type SiblingError struct {
	Parent   string
	Siblings []string
}

func (e *SiblingError) Error() string {
	return fmt.Sprintf("vhd: %s has other children beside it, whose contents would change: %s (use --force to commit anyway)",
		e.Parent, strings.Join(e.Siblings, ", "))
}

// ChildrenError refuses to remove an image other images depend on.
type ChildrenError struct {
	Image    string
	Children []string
}

func (e *ChildrenError) Error() string {
	return fmt.Sprintf("vhd: %s is the parent of %s, which would lose their parent (use --force to remove it anyway)",
		e.Image, strings.Join(e.Children, ", "))
}

// maxSiblingScan bounds the directory entries examined for siblings.
const maxSiblingScan = 10000

// commitChunk bounds the bytes copied per write into the parent.
const commitChunk = 4 << 20

// Commit writes the data of the differencing disk at child into its parent,
// sector for sector (a partly written block copies only the sectors whose
// bitmap bits are set), then empties the child, or deletes it with
// o.Remove.
//
// It refuses when the child or the parent is in use (both are opened for
// writing, which takes their locks), when the parent is damaged (its
// writable open refuses) or read-only by its mode (even for root), when the
// child is larger than its parent, when o.Remove is set and child is a
// symbolic link, and, unless o.Force, when other children of the parent are found in its
// directory (*SiblingError).
//
// Crash safety: at every instant the chain child -> parent reads the same
// flat disk. The data goes into the parent first (the child still covers
// those sectors, so what the chain shows does not depend on whether a
// parent write landed); the parent is synced; then the child's BAT is reset
// to unallocated in one write (any mix of old and new entries reads the
// same, since the parent now holds the data) and synced; then a copy of the
// footer is written where the metadata ends, synced, and the file truncated
// after it (until the truncation the old footer still ends the file).
func Commit(child string, o CommitOptions) (*CommitResult, error) {
	opts := &Options{OpenFile: o.OpenFile}
	if abs, err := filepath.Abs(child); err == nil {
		child = abs
	}
	if o.Remove {
		// Removing the link would leave the image behind, removing its
		// target would delete a file the user did not name: neither.
		if fi, err := os.Lstat(child); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(child)
			return nil, fmt.Errorf("vhd: %s: a symbolic link (to %s): --remove deletes the child image, so name the image itself", child, target)
		}
	}
	if isVHDX(opts, child) {
		return commitVHDX(child, o, opts)
	}
	cl, cf, err := openLocked(child, opts, "it is open for writing elsewhere (a mount?)")
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if cl.Type() != "differencing" {
		return nil, fmt.Errorf("vhd: %s: not a differencing disk: it has no parent to commit into", child)
	}
	// Find the parent as a read-only open would, then open it for writing.
	shell := &Disk{layers: []lay.Layer{cl}, files: []File{cf}, found: []lay.Candidate{{}}}
	p, _, _, err := shell.openParent(cl, opts, "")
	if err != nil {
		return nil, err
	}
	parent := p.Path()
	p.Close()
	if err := refuseVHDX(opts, parent, "a VHDX parent of a VHD child"); err != nil {
		return nil, err
	}
	if err := refuseReadOnly(parent); err != nil {
		return nil, err
	}
	pd, err := Open(parent, opts)
	if err != nil {
		return nil, fmt.Errorf("vhd: cannot commit %s into its parent: %w", child, err)
	}
	defer pd.Close()
	pl, _ := pd.w.(*vhd.Layer)
	if pl == nil || cl.MatchParent(pl) != nil {
		return nil, fmt.Errorf("vhd: %s: %w: the parent changed while it was being opened", parent, ErrParentMismatch)
	}
	if cl.Size() > pl.Size() {
		return nil, fmt.Errorf("vhd: %s (%d bytes) is larger than its parent %s (%d bytes): the parent cannot hold its data", child, cl.Size(), parent, pl.Size())
	}
	o.fill()
	if !o.Force {
		sib, err := o.children(opts, filepath.Dir(parent), pl, []string{child, parent})
		if err != nil {
			return nil, err
		}
		if len(sib) > 0 {
			return nil, &SiblingError{Parent: parent, Siblings: sib}
		}
		if o.Remove {
			kids, err := o.children(opts, filepath.Dir(child), cl, []string{child, parent})
			if err != nil {
				return nil, err
			}
			if len(kids) > 0 {
				return nil, &ChildrenError{Image: child, Children: kids}
			}
		}
	}

	res := &CommitResult{Child: child, Parent: parent}
	total, err := cl.StoredBytes()
	if err != nil {
		return nil, err
	}
	var runs []lay.Run
	bs, size := cl.BlockSize(), cl.Size()
	buf := make([]byte, min(commitChunk, bs))
	for off0 := int64(0); off0 < size; off0 += bs {
		n0 := min(bs, size-off0)
		if st, _ := cl.Extent(off0, n0); st != lay.Data {
			continue // the block is not allocated
		}
		res.Blocks++
		if runs, err = cl.Map(runs[:0], off0, n0); err != nil {
			return nil, err
		}
		pos := off0
		for _, r := range runs {
			if r.State == lay.Data {
				if err := copyRun(cl, pd, buf, r, pos, res, o.Progress, total); err != nil {
					return nil, err
				}
			}
			pos += r.Len
		}
	}
	if err := pd.Sync(); err != nil {
		return nil, err
	}
	if o.Remove {
		if err := o.remove(child); err != nil {
			return nil, fmt.Errorf("vhd: %s: its data is in %s, but removing it failed: %w", child, parent, err)
		}
		res.Removed = true
		return res, nil
	}
	if err := cl.Empty(); err != nil {
		return nil, fmt.Errorf("%w (its data is already in %s: the chain reads the same)", err, parent)
	}
	return res, nil
}

func (o *CommitOptions) fill() {
	if o.readDir == nil {
		o.readDir = func(dir string) ([]string, error) {
			ents, err := os.ReadDir(dir)
			if err != nil {
				return nil, err
			}
			var out []string
			for _, e := range ents {
				out = append(out, filepath.Join(dir, e.Name()))
			}
			return out, nil
		}
	}
	if o.remove == nil {
		o.remove = os.Remove
	}
}

// openLocked opens one VHD file for writing, locked exclusively; a damaged
// image is refused (openLayer checks it).
func openLocked(path string, opts *Options, why string) (*vhd.Layer, File, error) {
	f, err := opts.openFile(path, true)
	if err != nil {
		return nil, nil, fmt.Errorf("vhd: %w", err)
	}
	if err := lockFile(f, true); err != nil {
		f.Close()
		return nil, nil, lockErr(path, err, why)
	}
	l, err := vhd.Open(path, f, vhd.Options{IgnoreChecksums: opts.IgnoreChecksums})
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return l, f, nil
}

// refuseVHDX refuses an operation that writes VHD structures on a VHDX
// image.
func refuseVHDX(opts *Options, path, what string) error {
	if isVHDX(opts, path) {
		return fmt.Errorf("vhd: %s: %w: %s is not supported for VHDX yet", path, ErrUnsupported, what)
	}
	return nil
}

// children lists the differencing VHDs in dir whose parent unique id is
// l's unique id, leaving out the paths in skip.
func (o *CommitOptions) children(opts *Options, dir string, l *vhd.Layer, skip []string) ([]string, error) {
	return o.scanChildren(opts, dir, l.Path(), skip, func(p string, f File) bool {
		c, err := vhd.Open(p, f, vhd.Options{ReadOnly: true})
		if err != nil {
			return false
		}
		return c.Type() == "differencing" && c.ParentID() == l.UniqueID()
	})
}

// childrenVHDX lists the .vhdx and .avhdx files in dir whose parent_linkage
// (or non-zero parent_linkage2) is dw, leaving out the paths in skip.
func (o *CommitOptions) childrenVHDX(opts *Options, dir, parent string, dw vhdx.GUID, skip []string) ([]string, error) {
	return o.scanChildren(opts, dir, parent, skip, func(p string, f File) bool {
		if ext := strings.ToLower(filepath.Ext(p)); ext != ".vhdx" && ext != ".avhdx" {
			return false
		}
		c, err := vhdx.Open(p, f, vhdx.Options{ReadOnly: true})
		if err != nil || c.Parent() == nil {
			return false
		}
		l1, l2 := c.ParentLinkage()
		return l1 == dw || (!l2.IsZero() && l2 == dw)
	})
}

// scanChildren lists the regular files in dir (but those in skip) that
// match says are children of parent; match gets the file open read-only
// and must not close it.
func (o *CommitOptions) scanChildren(opts *Options, dir, parent string, skip []string, match func(p string, f File) bool) ([]string, error) {
	names, err := o.readDir(dir)
	if err != nil {
		return nil, fmt.Errorf("vhd: looking for other children of %s: %w", parent, err)
	}
	var skipInfo []os.FileInfo
	for _, s := range skip {
		if fi, err := os.Stat(s); err == nil {
			skipInfo = append(skipInfo, fi)
		}
	}
	var out []string
	for i, p := range names {
		if i >= maxSiblingScan {
			break
		}
		if isIn(p, skip, skipInfo) {
			continue
		}
		if fi, err := os.Stat(p); err == nil && !fi.Mode().IsRegular() {
			continue // never opened: opening some devices has effects
		}
		f, err := opts.openFile(p, false)
		if err != nil {
			continue // not a regular file, or unreadable: not a child we can see
		}
		if match(p, f) {
			out = append(out, p)
		}
		f.Close()
	}
	return out, nil
}

func isIn(p string, paths []string, infos []os.FileInfo) bool {
	for _, s := range paths {
		if s == p {
			return true
		}
	}
	if fi, err := os.Stat(p); err == nil {
		for _, s := range infos {
			if os.SameFile(fi, s) {
				return true
			}
		}
	}
	return false
}

// copyRun writes the Data run r of the child layer cl, at virtual offset
// pos, into the parent disk pd through buf, adding to res.Bytes and
// reporting progress against total.
func copyRun(cl lay.Layer, pd *Disk, buf []byte, r lay.Run, pos int64, res *CommitResult, progress func(done, total int64), total int64) error {
	for done := int64(0); done < r.Len; {
		n := min(r.Len-done, int64(len(buf)))
		if err := cl.ReadData(buf[:n], r.FileOff+done); err != nil {
			return err
		}
		if _, err := pd.WriteAt(buf[:n], pos+done); err != nil {
			return err
		}
		done += n
		res.Bytes += n
		if progress != nil {
			progress(res.Bytes, total)
		}
	}
	return nil
}
