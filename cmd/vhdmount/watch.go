package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vhdmount/vhdmount/format"
)

// watchedDisk is a writable disk whose image file is watched: deleting the
// image (or its directory) while it is mounted does not stop the writes,
// which go to a file nobody can reach and vanish when the server exits.
// Sync fails once the image is deleted, and gone says so at exit.
type watchedDisk struct {
	*format.Disk
	path string         // absolute path of the image
	f    *os.File       // the image, opened again, read-only; nil when not watched
	st   syscall.Stat_t // f's identity when the mount started
}

// watch opens the image again to tell later whether it is still at path.
func (w *watchedDisk) watch(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	if err := syscall.Fstat(int(f.Fd()), &w.st); err != nil {
		f.Close()
		return fmt.Errorf("%s: %v", abs, err)
	}
	if w.st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		f.Close()
		return fmt.Errorf("%s is not a regular file", abs)
	}
	w.path, w.f = abs, f
	return nil
}

// Sync syncs the image and fails if it has been deleted: an fsync must not
// acknowledge data that will be lost.
func (w *watchedDisk) Sync() error {
	if err := w.Disk.Sync(); err != nil {
		return err
	}
	if w.deleted() {
		return fmt.Errorf("%s was deleted while mounted: what is written to disk.raw is lost when the mount ends", w.path)
	}
	return nil
}

func (w *watchedDisk) deleted() bool {
	var st syscall.Stat_t
	return w.f != nil && syscall.Fstat(int(w.f.Fd()), &st) == nil && st.Nlink == 0
}

// gone describes what happened to the image if it is no longer at its path:
// deleted (its data is lost) or moved or replaced (its data is elsewhere).
// It is "" when the image is where it was, or not watched.
func (w *watchedDisk) gone() string {
	if w.f == nil {
		return ""
	}
	if w.deleted() {
		return fmt.Sprintf("DATA LOST: the image %s was deleted while mounted; everything written through the mount is gone", w.path)
	}
	var now syscall.Stat_t
	if err := syscall.Stat(w.path, &now); err != nil {
		return fmt.Sprintf("the image %s was moved while mounted (%v): what was written is in the moved file, not at this path", w.path, err)
	}
	if now.Dev != w.st.Dev || now.Ino != w.st.Ino {
		return fmt.Sprintf("the image %s was replaced while mounted: what was written is in the file that was there before, not in the one there now", w.path)
	}
	return ""
}

// Close closes the disk and the watch.
func (w *watchedDisk) Close() error {
	err := w.Disk.Close()
	if w.f != nil {
		w.f.Close()
	}
	return err
}
