package format

import (
	"syscall"

	"golang.org/x/sys/unix"
)

const canAdvise = true

// willNeed starts the kernel reading n bytes of f at off into the page
// cache, without waiting for them. Files that are not OS files are left
// alone. The error is only for tests: advice that fails changes nothing.
func willNeed(f File, off, n int64) error {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	cerr := rc.Control(func(fd uintptr) {
		err = unix.Fadvise(int(fd), off, n, unix.FADV_WILLNEED)
	})
	if cerr != nil {
		return cerr
	}
	return err
}
