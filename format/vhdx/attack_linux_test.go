package vhdx_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestAttackResizeFixedNoRoom grows a fixed file on a filesystem that runs
// out of room half-way through the allocation (as ext4's fallocate does,
// keeping what it allocated): the resize fails, the file is as it was, and
// the space the failed allocation took is given back.
func TestAttackResizeFixedNoRoom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.vhdx")
	if err := vhdx.Create(path, vhdx.CreateOptions{Size: 8 << 20, Fixed: true}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks
	}
	b0 := blocks()
	called := false
	vhdx.SetPreallocate(func(f *os.File, off, n int64) error {
		called = true
		if err := syscall.Fallocate(int(f.Fd()), 0, off, n/2); err != nil {
			t.Logf("fallocate: %v", err)
		}
		return syscall.ENOSPC
	})
	defer vhdx.SetPreallocate(nil)
	l, _ := openRW(t, path)
	_, err = l.Resize(64<<20, false, 0)
	t.Logf("resize: %v", err)
	if !errors.Is(err, syscall.ENOSPC) || !called {
		t.Fatalf("resize on a full filesystem: %v (preallocation called: %v)", err, called)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("a failed resize changed the file (%d bytes, was %d)", len(after), len(before))
	}
	// The failed allocation took 16 MiB (32768 blocks of 512 bytes); the
	// filesystem may keep a block or two of its own metadata (an extent
	// tree block of 4 KiB was seen on ext4) after the truncation.
	if b := blocks(); b > b0+16 {
		t.Errorf("the file holds %d blocks of 512 bytes, %d before: the failed allocation was kept", b, b0)
	}
}
