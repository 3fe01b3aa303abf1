package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
		"snapshot-4-dd.vhd", "snapshot-4-dd.lock", "other.vhd", "snapshot-5-ee.txt"} {
		touch(n)
	}
	live, err := os.Open(filepath.Join(dir, "snapshot-4-dd.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := syscall.Flock(int(live.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	cleanStaleSnapshots(dir, newReporter(io.Discard))
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{"other.vhd", "snapshot-4-dd.lock", "snapshot-4-dd.vhd", "snapshot-5-ee.txt"}
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}

// TestSnapshotLock: the lock is taken at once, names the child after the
// pid, and a cleaner does not remove a live server's files.
func TestSnapshotLock(t *testing.T) {
	dir := t.TempDir()
	o := overlayChild{temp: true}
	if err := o.takeLock(dir); err != nil {
		t.Fatal(err)
	}
	defer o.lock.Close()
	if !strings.HasPrefix(filepath.Base(o.path), "snapshot-"+strconv.Itoa(os.Getpid())+"-") || !strings.HasSuffix(o.path, ".vhd") {
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

// TestOverlayRefusesVHDX: an overlay or a snapshot of a VHDX image is
// refused before anything is created.
func TestOverlayRefusesVHDX(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	img := filepath.Join(dir, "disk.vhdx")
	if err := os.WriteFile(img, append([]byte("vhdxfile"), make([]byte, 1<<16)...), 0o644); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "child.vhd")
	for _, c := range []*config{{image: img, snapshot: true}, {image: img, overlay: child}} {
		if _, err := prepareOverlay(c, newReporter(io.Discard)); err == nil || !strings.Contains(err.Error(), "not supported for VHDX yet") {
			t.Errorf("%+v: %v", c, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("files made: %v", ents)
	}
}
