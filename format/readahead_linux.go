package format

import (
	"syscall"

	"golang.org/x/sys/unix"
)

const canAdvise = true

// willNeed starts the kernel reading n bytes of f at off into the page
// cache, without waiting for them. Files that are not OS files are left
// alone.
func willNeed(f File, off, n int64) {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.Fadvise(int(fd), off, n, unix.FADV_WILLNEED) //nolint:errcheck // advice only
	})
}
