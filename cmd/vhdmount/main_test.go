package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/format"
)

// TestOpenLog: the --log file is created or appended to; a FIFO, a
// directory or a device is refused at once, without blocking or writing.
func TestOpenLog(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "v.log")
	for i, want := range []string{"first", "second"} {
		r := newReporter()
		if err := r.openLog(p); err != nil {
			t.Fatal(err)
		}
		r.Printf("vhdmount: %s", want)
		r.Note("note %d", i)
		r.Close()
	}
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 || !strings.HasSuffix(lines[0], "]: first") || !strings.HasSuffix(lines[2], "]: second") || !strings.HasSuffix(lines[3], "]: note 1") {
		t.Errorf("log file:\n%s", b)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{fifo, dir, os.DevNull} {
		done := make(chan error, 1)
		go func() { done <- newReporter().openLog(bad) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("openLog(%s) = %v, want a refusal", bad, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("openLog(%s) blocks", bad)
		}
	}
}

// TestMountFailure: fusermount3's reason replaces go-fuse's exit code.
func TestMountFailure(t *testing.T) {
	got := mountFailure(errors.New("fusermount exited with code 256\n"), "/usr/bin/fusermount3: failed to open /dev/fuse: Permission denied\n", &config{})
	if !strings.HasPrefix(got, "/usr/bin/fusermount3: failed to open /dev/fuse: Permission denied; hint: ") || strings.Contains(got, "256") || strings.Contains(got, "\n") {
		t.Errorf("got %q", got)
	}
	got = mountFailure(errors.New("no such device"), "", &config{})
	if !strings.HasPrefix(got, "no such device; hint: ") {
		t.Errorf("got %q", got)
	}
}

// TestWatchedDisk: the watch tells a deleted image (Sync fails, data lost)
// from a moved or replaced one, and says nothing while it is in place.
func TestWatchedDisk(t *testing.T) {
	open := func(t *testing.T) (*watchedDisk, string) {
		dir := t.TempDir()
		p := filepath.Join(dir, "w.vhd")
		if err := format.Create(p, format.CreateOptions{Type: format.TypeDynamic, Size: 4 << 20}); err != nil {
			t.Fatal(err)
		}
		d, err := format.Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		w := &watchedDisk{Disk: d}
		if err := w.watch(p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		if w.gone() != "" || w.Sync() != nil {
			t.Fatalf("in place: gone %q, sync %v", w.gone(), w.Sync())
		}
		return w, p
	}
	t.Run("deleted", func(t *testing.T) {
		w, p := open(t)
		os.Remove(p)
		if err := w.Sync(); err == nil || !strings.Contains(err.Error(), "deleted") {
			t.Errorf("Sync: %v", err)
		}
		if g := w.gone(); !strings.HasPrefix(g, "DATA LOST") {
			t.Errorf("gone: %q", g)
		}
	})
	t.Run("moved", func(t *testing.T) {
		w, p := open(t)
		os.Rename(p, p+".moved")
		if err := w.Sync(); err != nil {
			t.Errorf("Sync: %v (the data is safe in the moved file)", err)
		}
		if g := w.gone(); !strings.Contains(g, "was moved") {
			t.Errorf("gone: %q", g)
		}
	})
	t.Run("replaced", func(t *testing.T) {
		w, p := open(t)
		os.Rename(p, p+".old")
		os.WriteFile(p, nil, 0o644)
		if g := w.gone(); !strings.Contains(g, "was replaced") {
			t.Errorf("gone: %q", g)
		}
	})
}
