package format

import (
	"fmt"
	"os"
	"path/filepath"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// withLinkage returns kv with parent_linkage set to p1 (when not zero) and
// parent_linkage2 set to p2, or removed when p2 is zero.
func withLinkage(kv []vhdx.LocatorEntry, p1, p2 vhdx.GUID) []vhdx.LocatorEntry {
	var out []vhdx.LocatorEntry
	set2 := false
	for _, e := range kv {
		switch e.Key {
		case "parent_linkage":
			if !p1.IsZero() {
				e.Value = "{" + p1.String() + "}"
			}
		case "parent_linkage2":
			if p2.IsZero() {
				continue
			}
			e.Value, set2 = "{"+p2.String()+"}", true
		}
		out = append(out, e)
	}
	if !p2.IsZero() && !set2 {
		out = append(out, vhdx.LocatorEntry{Key: "parent_linkage2", Value: "{" + p2.String() + "}"})
	}
	return out
}

// commitVHDX is Commit for an AVHDX child, into its VHDX parent.
//
// Identity: writing the parent gives it a new DataWriteGuid, which the
// child must match at every instant. The new GUID G is chosen first; the
// child's locator gets parent_linkage2 = G and parent_linkage = the
// parent's DataWriteGuid now (which an earlier commit cut short may have
// left matching only parent_linkage2) in its crash-safe rewrite; then the parent is written (its header update, before
// the first data, gives it G, in its own alternating order), the data
// copied and synced; the child is emptied (or removed); last, the child's
// locator gets parent_linkage = G and loses parent_linkage2. Before the
// parent's header update the parent matches parent_linkage, after it
// parent_linkage2 (accepted with a warning), and after the last rewrite
// parent_linkage again.
//
// Data: the chain reads the same at every instant, as for VHD: the parent
// gets the child's data first (FULLY_PRESENT blocks whole, PARTIALLY_PRESENT
// blocks the sectors whose bits are set; ZERO, UNMAPPED and UNDEFINED
// blocks are discarded in the parent so they read zeros there), which the
// child still covers; then the child's payload entries become NOT_PRESENT.
func commitVHDX(child string, o CommitOptions, opts *Options) (*CommitResult, error) {
	cf, err := opts.openFile(child, true)
	if err != nil {
		return nil, fmt.Errorf("vhd: %w", err)
	}
	if err := lockFile(cf, true); err != nil {
		cf.Close()
		return nil, lockErr(child, err, "it is open for writing elsewhere (a mount?)")
	}
	ro, err := vhdx.Open(child, cf, vhdx.Options{ReadOnly: true})
	if err != nil {
		cf.Close()
		return nil, err
	}
	if ro.Parent() == nil {
		cf.Close()
		return nil, fmt.Errorf("vhd: %s: not a differencing disk: it has no parent to commit into", child)
	}
	shell := &Disk{layers: []lay.Layer{ro}, files: []File{cf}, found: []lay.Candidate{{}}}
	p, _, _, err := shell.openParent(ro, opts, "")
	if err != nil {
		cf.Close()
		return nil, err
	}
	parent, psize := p.Path(), p.Size()
	p.Close()
	if err := refuseReadOnly(parent); err != nil {
		cf.Close()
		return nil, err
	}
	if ro.Size() > psize {
		cf.Close()
		return nil, fmt.Errorf("vhd: %s (%d bytes) is larger than its parent %s (%d bytes): the parent cannot hold its data", child, ro.Size(), parent, psize)
	}
	pd, err := Open(parent, opts)
	if err != nil {
		cf.Close()
		return nil, fmt.Errorf("vhd: cannot commit %s into its parent: %w", child, err)
	}
	defer pd.Close()
	pl, _ := pd.w.(*vhdx.Layer)
	if pl == nil || ro.MatchParent(pl) != nil || pl.Size() != psize {
		cf.Close()
		return nil, fmt.Errorf("vhd: %s: %w: the parent changed while it was being opened", parent, ErrParentMismatch)
	}
	cl, err := vhdx.Open(child, cf, vhdx.Options{})
	if err != nil {
		cf.Close()
		return nil, err
	}
	defer cl.Close()
	o.fill()
	if !o.Force {
		sib, err := o.childrenVHDX(opts, filepath.Dir(parent), parent, pl.DataWriteGUID(), []string{child, parent})
		if err != nil {
			return nil, err
		}
		if len(sib) > 0 {
			return nil, &SiblingError{Parent: parent, Siblings: sib}
		}
		if o.Remove {
			kids, err := o.childrenVHDX(opts, filepath.Dir(child), child, cl.DataWriteGUID(), []string{child, parent})
			if err != nil {
				return nil, err
			}
			if len(kids) > 0 {
				return nil, &ChildrenError{Image: child, Children: kids}
			}
		}
	}
	res := &CommitResult{Child: child, Parent: parent}
	size := cl.Size()
	in, err := cl.Info()
	if err != nil {
		return nil, err
	}
	var total int64
	counted := false // the current block is counted in res.Blocks
	err = eachRun(cl, size, in.BlockSize, func(r lay.Run, pos int64, newBlock bool) error {
		if r.State == lay.Data {
			total += r.Len
		}
		if newBlock {
			counted = false
		}
		if !counted && r.State != lay.Parent {
			res.Blocks++
			counted = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	g, err := vhdx.NewDataWriteGUID()
	if err != nil {
		return nil, fmt.Errorf("vhd: making a GUID: %w", err)
	}
	if err := pl.SetNextDataWriteGUID(g); err != nil {
		return nil, err
	}
	// parent_linkage names the parent as it is now: after a crash of an
	// earlier commit the child may match it only through parent_linkage2,
	// which is about to name g instead.
	if _, err := cl.RewriteLocator(withLinkage(cl.Locator(), pl.DataWriteGUID(), g)); err != nil {
		return nil, err
	}
	buf := make([]byte, commitChunk)
	zero := lay.Run{} // a pending Zero run, merged across blocks
	zeroAt := int64(0)
	flush := func() error {
		if zero.Len == 0 {
			return nil
		}
		err := pd.Discard(zeroAt, zero.Len)
		zero.Len = 0
		return err
	}
	err = eachRun(cl, size, in.BlockSize, func(r lay.Run, pos int64, _ bool) error {
		if r.State == lay.Zero {
			if zero.Len > 0 && zeroAt+zero.Len == pos {
				zero.Len += r.Len
				return nil
			}
			if err := flush(); err != nil {
				return err
			}
			zero, zeroAt = r, pos
			return nil
		}
		if err := flush(); err != nil {
			return err
		}
		if r.State == lay.Data {
			return copyRun(cl, pd, buf, r, pos, res, o.Progress, total)
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, err
	}
	if err := pd.Sync(); err != nil {
		return nil, err
	}
	if pl.DataWriteGUID() != g && res.Bytes > 0 {
		return nil, fmt.Errorf("vhd: %s: BUG: the parent's DataWriteGuid is not the one announced to %s", parent, child)
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
	// The parent's identity now: G if anything was written, else unchanged.
	now := pl.DataWriteGUID()
	if _, err := cl.RewriteLocator(withLinkage(cl.Locator(), now, vhdx.GUID{})); err != nil {
		return nil, fmt.Errorf("%w (its data is already in %s; the child matches it through parent_linkage2)", err, parent)
	}
	return res, nil
}

// refuseReadOnly refuses to write into path when its mode grants no write
// permission: a parent kept read-only on purpose (as Hyper-V leaves the
// parents of its checkpoints) is not written by commit, even by root, whom
// the open alone would not stop.
func refuseReadOnly(path string) error {
	fi, err := os.Stat(path)
	if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o222 == 0 {
		return fmt.Errorf("vhd: %s: %w: the file is read-only (mode %04o); make it writable (chmod u+w) to commit into it", path, ErrReadOnly, fi.Mode().Perm())
	}
	return nil
}

// eachRun calls fn with the runs of [0, size) of l, at their virtual
// offsets, mapped one block of bs bytes at a time so that the runs held in
// memory stay bounded whatever the file's bitmaps look like (alternate
// sector bits make a run per sector). newBlock is set for the first run of
// each block.
func eachRun(l lay.Layer, size, bs int64, fn func(r lay.Run, pos int64, newBlock bool) error) error {
	if bs <= 0 {
		return fmt.Errorf("vhd: %s: BUG: block size %d", l.Path(), bs)
	}
	var runs []lay.Run
	var err error
	for off := int64(0); off < size; off += bs {
		if runs, err = l.Map(runs[:0], off, min(bs, size-off)); err != nil {
			return err
		}
		pos := off
		for i, r := range runs {
			if err := fn(r, pos, i == 0); err != nil {
				return err
			}
			pos += r.Len
		}
	}
	return nil
}
