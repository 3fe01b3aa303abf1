package vhdx

import (
	"errors"
	"os"
	"syscall"
)

// preallocate reserves n bytes of f at off (fallocate: unwritten extents that
// read as zeros). A filesystem that cannot leaves the range sparse.
func preallocate(f *os.File, off, n int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, off, n)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return nil
	}
	return err
}

// openReadNoBlock opens path read-only without blocking on a FIFO or device.
func openReadNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
