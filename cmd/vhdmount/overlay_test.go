package main

import (
	"crypto/sha256"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestCleanStaleSnapshots: a child whose lock is free, or that has no lock
// file, is removed with its lock; a child whose lock is held (a live
// server), and files that are not snapshots, are left.
func TestCleanStaleSnapshots(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"snapshot-1-aa.vhd", "snapshot-1-aa.lock", "snapshot-2-bb.vhd", "snapshot-3-cc.lock",
		"snapshot-4-dd.vhd", "snapshot-4-dd.lock", "other.vhd", "snapshot-5-ee.txt",
		"snapshot-6-ff.avhdx", "snapshot-6-ff.lock", "snapshot-7-aa.avhdx", "snapshot-8-bb.avhdx", "snapshot-8-bb.lock"} {
		touch(n)
	}
	for _, n := range []string{"snapshot-4-dd.lock", "snapshot-8-bb.lock"} {
		live, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		if err := syscall.Flock(int(live.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
	}
	cleanStaleSnapshots(dir, newReporter(io.Discard))
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{"other.vhd", "snapshot-4-dd.lock", "snapshot-4-dd.vhd", "snapshot-5-ee.txt", "snapshot-8-bb.avhdx", "snapshot-8-bb.lock"}
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}

// TestSnapshotLock: the lock is taken at once, names the child after the
// pid, and a cleaner does not remove a live server's files.
func TestSnapshotLock(t *testing.T) {
	for _, ext := range []string{".vhd", ".avhdx"} {
		t.Run(ext, func(t *testing.T) { testSnapshotLock(t, ext) })
	}
}

func testSnapshotLock(t *testing.T, ext string) {
	dir := t.TempDir()
	o := overlayChild{temp: true}
	if err := o.takeLock(dir, ext); err != nil {
		t.Fatal(err)
	}
	defer o.lock.Close()
	if !strings.HasPrefix(filepath.Base(o.path), "snapshot-"+strconv.Itoa(os.Getpid())+"-") || !strings.HasSuffix(o.path, ext) {
		t.Errorf("child %s", o.path)
	}
	if err := os.WriteFile(o.path, []byte("child"), 0o600); err != nil {
		t.Fatal(err)
	}
	cleanStaleSnapshots(dir, newReporter(io.Discard))
	for _, p := range []string{o.path, o.lockPath} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the cleaner removed a live server's %s", p)
		}
	}
	o.done(true, newReporter(io.Discard))
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left after done: %v", ents)
	}
}

// TestSnapshotDirChecks: the snapshot directory must be ours and private.
func TestSnapshotDirChecks(t *testing.T) {
	base := t.TempDir()
	t.Setenv("TMPDIR", base)
	dir, err := snapshotDir()
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", fi.Mode())
	}
	os.Chmod(dir, 0o777)
	if _, err := snapshotDir(); err == nil {
		t.Error("a world-writable snapshot directory accepted")
	}
	os.Remove(dir)
	os.Symlink(base, dir)
	if _, err := snapshotDir(); err == nil {
		t.Error("a symbolic link as the snapshot directory accepted")
	}
}

// mixedImages makes, in a new directory that is also TMPDIR, a VHD and a
// VHDX of 8 MiB, a VHD child of the VHD and a VHDX child of the VHDX.
func mixedImages(t *testing.T) (dir, vhdImg, vhdxImg, vhdChild, vhdxChild string) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv("TMPDIR", dir)
	vhdImg, vhdxImg = filepath.Join(dir, "base.vhd"), filepath.Join(dir, "base.vhdx")
	vhdChild, vhdxChild = filepath.Join(dir, "child.vhd"), filepath.Join(dir, "child.avhdx")
	if err := format.Create(vhdImg, format.CreateOptions{Type: vhd.TypeDynamic, Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := vhdx.Create(vhdxImg, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := format.Create(vhdChild, format.CreateOptions{Parent: vhdImg}); err != nil {
		t.Fatal(err)
	}
	if err := vhdx.Create(vhdxChild, vhdx.CreateOptions{Parent: vhdxImg}); err != nil {
		t.Fatal(err)
	}
	return
}

// dirState maps each file in dir to its content's sha256.
func dirState(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range ents {
		if e.IsDir() {
			out[e.Name()] = [32]byte{}
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

// TestOverlayFormatMismatch: an overlay child of the other format than
// IMAGE's is refused before anything is created or changed: a new child
// named *.vhd over a VHDX, *.vhdx or *.avhdx over a VHD, and an existing
// VHD child over a VHDX or VHDX child over a VHD.
func TestOverlayFormatMismatch(t *testing.T) {
	dir, vhdImg, vhdxImg, vhdChild, vhdxChild := mixedImages(t)
	before := dirState(t, dir)
	for _, tc := range []struct{ image, overlay, want string }{
		{vhdxImg, filepath.Join(dir, "new.vhd"), "a VHD cannot have a VHDX parent"},
		{vhdxImg, filepath.Join(dir, "new.AVHD"), "a VHD cannot have a VHDX parent"},
		{vhdImg, filepath.Join(dir, "new.avhdx"), "a VHDX child cannot have a VHD parent"},
		{vhdImg, filepath.Join(dir, "new.vhdx"), "a VHDX child cannot have a VHD parent"},
		{vhdxImg, vhdChild, "a VHD cannot have a VHDX parent"},
		{vhdImg, vhdxChild, "a VHDX child cannot have a VHD parent"},
	} {
		c := &config{image: tc.image, overlay: tc.overlay}
		o, err := prepareOverlay(c, newReporter(io.Discard))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.overlay) {
			t.Errorf("overlay %s of %s: %v; want an error naming the overlay and saying %q", tc.overlay, tc.image, err, tc.want)
		}
		if o != nil || c.child != "" {
			t.Errorf("overlay %s of %s: child set to %q", tc.overlay, tc.image, c.child)
		}
	}
	if after := dirState(t, dir); !maps.Equal(before, after) {
		t.Errorf("files changed: before %v, after %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
}

// TestOverlayVHDXChild: a new overlay or snapshot child of a VHDX image
// (given by a relative path) is a VHDX differencing disk whose chain
// resolves its parent to IMAGE itself, with IMAGE's block size; a name
// without a format extension gets IMAGE's format; the snapshot child is an
// .avhdx removed by done.
func TestOverlayVHDXChild(t *testing.T) {
	dir, _, vhdxImg, _, _ := mixedImages(t)
	t.Chdir(dir)
	for _, tc := range []struct {
		c    *config
		temp bool
	}{
		{&config{image: filepath.Base(vhdxImg), overlay: "over.avhdx"}, false},
		{&config{image: filepath.Base(vhdxImg), overlay: "sub/../plain"}, false},
		{&config{image: filepath.Base(vhdxImg), snapshot: true}, true},
	} {
		os.Mkdir("sub", 0o755)
		o, err := prepareOverlay(tc.c, newReporter(io.Discard))
		if err != nil {
			t.Fatalf("%+v: %v", tc.c, err)
		}
		if !o.created || o.temp != tc.temp || tc.c.child != o.path || !filepath.IsAbs(o.path) {
			t.Errorf("%+v: overlay %+v", tc.c, o)
		}
		if tc.temp && (filepath.Dir(o.path) != filepath.Join(dir, "vhdmount-snapshots-"+strconv.Itoa(os.Getuid())) || !strings.HasSuffix(o.path, ".avhdx")) {
			t.Errorf("snapshot child %s", o.path)
		}
		if !isVHDX(o.path) {
			t.Errorf("%s is not a VHDX", o.path)
		}
		d, err := format.Open(o.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkOverlayParent(tc.c, d); err != nil {
			t.Error(err)
		}
		ls := d.Layers()
		if len(ls) != 2 || ls[1].Path != vhdxImg || ls[0].Format != "vhdx" || ls[0].BlockSize != 1<<20 {
			t.Errorf("%s: chain %+v", o.path, ls)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		o.done(true, newReporter(io.Discard))
		if _, err := os.Stat(o.path); tc.temp != errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after done: %v", o.path, err)
		}
	}
}
