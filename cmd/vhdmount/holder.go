package main

import (
	"os"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/mountinfo"
)

// lockHolder returns the mount point of a live writable vhdmount mount that
// holds a lock mounting c's image read-write conflicts with, or "". A
// writable mount locks its image exclusively and its parents shared, so it
// conflicts when its image is in our chain or our image is in its chain.
// The image of a mount is the mount's source (vhdfs sets FsName to it).
func lockHolder(c *config) string {
	ours := chainFiles(c.image, c.parent)
	if len(ours) == 0 {
		return ""
	}
	ms, _ := mountinfo.List()
	for _, m := range ms {
		if m.FSType != mountinfo.VhdmountType || m.ReadOnly() {
			continue
		}
		theirs := chainFiles(m.Source, "")
		if len(theirs) > 0 && (hasFile(ours, theirs[0]) || hasFile(theirs, ours[0])) {
			return m.Point
		}
	}
	return ""
}

// chainFiles returns the files of the chain whose top image is path: the
// image, then its parents as far as they can be opened read-only (which
// takes no lock). It returns nil if path is not a regular file.
func chainFiles(path, parent string) []os.FileInfo {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	out := []os.FileInfo{fi}
	d, err := format.Open(path, &format.Options{ReadOnly: true, Parent: parent, IgnoreChecksums: true})
	if err != nil {
		return out
	}
	defer d.Close()
	for _, l := range d.Layers()[1:] {
		if fi, err := os.Stat(l.Path); err == nil {
			out = append(out, fi)
		}
	}
	return out
}

func hasFile(list []os.FileInfo, fi os.FileInfo) bool {
	for _, x := range list {
		if os.SameFile(x, fi) {
			return true
		}
	}
	return false
}
