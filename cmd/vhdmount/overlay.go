package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// An overlay mount (--overlay CHILD) and a snapshot mount (--snapshot) both
// mount a differencing disk over IMAGE read-write; IMAGE and its parents are
// only read. A snapshot's child is temporary: it lives in a per-user
// directory (snapshotDir), is named after the server's pid, and is removed
// when the mount ends. Its lock file, flocked by the server for its whole
// life, tells a live server's child from a dead one's: a snapshot mount first
// removes the children whose lock is free (left by a server that was killed).

// overlayChild is the differencing disk an overlay or snapshot mount serves.
type overlayChild struct {
	path     string   // the child image
	created  bool     // this server made it
	temp     bool     // a snapshot: removed when the mount ends
	lock     *os.File // a snapshot's lock, held while the server lives
	lockPath string
}

// snapshotPrefix starts the names of snapshot children and their locks.
const snapshotPrefix = "snapshot-"

// prepareOverlay makes (or, for an existing --overlay CHILD, accepts) the
// child to mount, and sets c.child. It returns nil without an overlay.
func prepareOverlay(c *config, rep *reporter) (*overlayChild, error) {
	if c.overlay == "" && !c.snapshot {
		return nil, nil
	}
	what := "--overlay"
	if c.snapshot {
		what = "--snapshot"
	}
	if fi, err := os.Stat(c.image); err != nil {
		return nil, fmt.Errorf("%s: %v", c.image, errors.Unwrap(err))
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", c.image)
	}
	// The child has IMAGE's format: [MS-VHDX] allows only a VHDX parent for
	// a VHDX, and a VHD's parent must be a VHD.
	imgVHDX := isVHDX(c.image)
	o := &overlayChild{}
	if c.snapshot {
		dir, err := snapshotDir()
		if err != nil {
			return nil, err
		}
		cleanStaleSnapshots(dir, rep)
		ext := ".vhd"
		if imgVHDX {
			ext = ".avhdx"
		}
		if err := o.takeLock(dir, ext); err != nil {
			return nil, err
		}
		o.temp = true
	} else {
		abs, err := filepath.Abs(c.overlay)
		if err != nil {
			return nil, err
		}
		o.path = abs
		if _, err := os.Lstat(abs); err == nil {
			switch childVHDX := isVHDX(abs); {
			case imgVHDX && !childVHDX:
				return nil, fmt.Errorf("%s is not a VHDX image, so it cannot be an overlay of the VHDX %s (a VHD cannot have a VHDX parent); give a new or existing .avhdx overlay", abs, c.image)
			case !imgVHDX && childVHDX:
				return nil, fmt.Errorf("%s is a VHDX image, so it cannot be an overlay of %s, which is not a VHDX (a VHDX child cannot have a VHD parent); give a new or existing .vhd overlay", abs, c.image)
			}
			c.child = abs // mount() checks that its parent is IMAGE
			return o, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("overlay %s: %v", c.overlay, errors.Unwrap(err))
		}
		if err := checkChildName(abs, c.image, imgVHDX); err != nil {
			return nil, err
		}
	}
	var err error
	if imgVHDX {
		var parent string
		if parent, err = filepath.Abs(c.image); err == nil {
			err = vhdx.Create(o.path, vhdx.CreateOptions{Parent: parent})
		}
	} else {
		err = format.Create(o.path, format.CreateOptions{Parent: c.image})
	}
	if err != nil {
		o.done(false, rep)
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "vhd: "), "vhdx: ")
		return nil, fmt.Errorf("creating the %s child %s: %s", strings.TrimPrefix(what, "--"), o.path, msg)
	}
	o.created = true
	c.child = o.path
	return o, nil
}

// checkChildName refuses a new overlay child whose name says the other
// format than IMAGE's: the child is made in IMAGE's format, and a name that
// contradicts it would mislead every tool that goes by the name.
func checkChildName(child, image string, imgVHDX bool) error {
	switch strings.ToLower(filepath.Ext(child)) {
	case ".vhd", ".avhd":
		if imgVHDX {
			return fmt.Errorf("overlay %s: a VHD cannot have a VHDX parent, and %s is a VHDX; name the overlay *.avhdx (or *.vhdx)", child, image)
		}
	case ".vhdx", ".avhdx":
		if !imgVHDX {
			return fmt.Errorf("overlay %s: a VHDX child cannot have a VHD parent, and %s is not a VHDX; name the overlay *.vhd (or *.avhd)", child, image)
		}
	}
	return nil
}

// checkOverlayParent verifies that the chain opened for an overlay has IMAGE
// as the child's parent (the very file, not a copy).
func checkOverlayParent(c *config, d *format.Disk) error {
	ls := d.Layers()
	if len(ls) < 2 {
		return fmt.Errorf("%s is not a differencing disk, so it cannot be an overlay of %s", c.child, c.image)
	}
	want, err1 := os.Stat(c.image)
	got, err2 := os.Stat(ls[1].Path)
	if err1 != nil || err2 != nil || !os.SameFile(want, got) {
		return fmt.Errorf("%s is an overlay of %s, not of %s; give another overlay file", c.child, ls[1].Path, c.image)
	}
	return nil
}

// done removes a snapshot's child and lock, or an overlay child this server
// created when the mount did not happen.
func (o *overlayChild) done(mounted bool, rep *reporter) {
	if o == nil {
		return
	}
	if o.path != "" && (o.temp || (o.created && !mounted)) {
		if err := os.Remove(o.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			rep.Printf("removing %s: %v", o.path, err)
		}
	}
	if o.lock != nil {
		if err := os.Remove(o.lockPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			rep.Printf("removing %s: %v", o.lockPath, err)
		}
		o.lock.Close()
	}
}

// snapshotDir returns the per-user directory of snapshot children:
// $TMPDIR/vhdmount-snapshots-UID, else /var/tmp/... (on disk, not in memory:
// a snapshot holds everything written to the mount). It is made mode 0700
// and must be a directory of ours that no one else can write.
func snapshotDir() (string, error) {
	base := os.Getenv("TMPDIR")
	if base == "" {
		base = "/var/tmp"
	}
	uid := os.Getuid()
	dir := filepath.Join(base, fmt.Sprintf("vhdmount-snapshots-%d", uid))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("snapshot directory: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return "", fmt.Errorf("snapshot directory %s: %v", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || int(st.Uid) != uid || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("snapshot directory %s is not a directory of mode 0700 owned by you (uid %d); remove it or set TMPDIR", dir, uid)
	}
	return dir, nil
}

// takeLock creates and locks this server's snapshot lock in dir and names
// the child after it: snapshot-PID-RANDOM.lock, and the child
// snapshot-PID-RANDOM followed by ext (.vhd, or .avhdx for a VHDX image).
func (o *overlayChild) takeLock(dir, ext string) error {
	for range 10 {
		var rnd [4]byte
		rand.Read(rnd[:])
		name := fmt.Sprintf("%s%d-%s", snapshotPrefix, os.Getpid(), hex.EncodeToString(rnd[:]))
		lockPath := filepath.Join(dir, name+".lock")
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("snapshot lock: %v", err)
		}
		// A cleaner may have taken the new file's lock before us (then ours
		// fails) or removed it (then the path no longer names our file):
		// either way, try another name.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		var a, b syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &a) != nil || syscall.Lstat(lockPath, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			f.Close()
			continue
		}
		o.lock, o.lockPath, o.path = f, lockPath, filepath.Join(dir, name+ext)
		return nil
	}
	return fmt.Errorf("snapshot lock: no free name in %s", dir)
}

// cleanStaleSnapshots removes the snapshot children in dir whose server is
// gone: their lock can be taken, or they have no lock file.
func cleanStaleSnapshots(dir string, rep *reporter) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, snapshotPrefix) || !e.Type().IsRegular() {
			continue
		}
		stem, isLock := strings.CutSuffix(name, ".lock")
		if !isLock {
			stem, ok := cutChildExt(name)
			if !ok {
				continue
			}
			// A child without a lock file: its server is gone (a server makes
			// its lock before its child and removes its child first).
			if _, err := os.Lstat(filepath.Join(dir, stem+".lock")); errors.Is(err, os.ErrNotExist) {
				removeStale(filepath.Join(dir, name), rep)
			}
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			for _, ext := range snapshotExts {
				removeStale(filepath.Join(dir, stem+ext), rep)
			}
			removeStale(filepath.Join(dir, name), rep)
		}
		f.Close()
	}
}

// snapshotExts are the extensions of snapshot children: a VHD image's
// child is a .vhd, a VHDX image's an .avhdx.
var snapshotExts = []string{".vhd", ".avhdx"}

// cutChildExt returns name without its snapshot child extension, and
// whether it had one.
func cutChildExt(name string) (string, bool) {
	for _, ext := range snapshotExts {
		if stem, ok := strings.CutSuffix(name, ext); ok {
			return stem, true
		}
	}
	return name, false
}

func removeStale(path string, rep *reporter) {
	err := os.Remove(path)
	switch {
	case err == nil:
		if _, ok := cutChildExt(path); ok {
			rep.Note("removed %s, the snapshot of a vhdmount server that is gone", path)
		}
	case !errors.Is(err, os.ErrNotExist):
		rep.Printf("removing the stale snapshot %s: %v", path, err)
	}
}

// overlayNote says, after "IMAGE mounted at ...", where writes go.
func (c *config) overlayNote() string {
	switch {
	case c.child == "":
		return ""
	case c.snapshot:
		return " (snapshot: writes go to " + c.child + ", removed at unmount)"
	}
	return " (overlay: writes go to " + c.child + ")"
}

// isVHDX reports whether the file at path starts with the VHDX identifier.
func isVHDX(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	var b [8]byte
	n, _ := f.ReadAt(b[:], 0)
	return vhdx.Probe(b[:n])
}
