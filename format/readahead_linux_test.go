package format

import (
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestWillNeedReads: the advice reaches the kernel for the files Open
// reads (os.File): pages dropped from the page cache are read back in
// without any read of ours, and a closed file's advice fails.
func TestWillNeedReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	const size = 4 << 20
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := openRegular(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, size/os.Getpagesize())
	resident := func() int {
		_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
		if e != 0 {
			t.Fatal("mincore:", e)
		}
		n := 0
		for _, v := range vec {
			n += int(v & 1)
		}
		return n
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n := resident(); n > len(vec)/2 {
		t.Skipf("%s keeps %d of %d pages after DONTNEED (a tmpfs?): nothing to see", path, n, len(vec))
	}
	if err := willNeed(f, 0, size); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); resident() < len(vec); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pages resident 10 s after the advice", resident(), len(vec))
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.Close()
	if err := willNeed(f, 0, size); err == nil {
		t.Fatal("advice on a closed file did not fail")
	}
}
