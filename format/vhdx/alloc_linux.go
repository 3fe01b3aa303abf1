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

// punchOS deallocates [off, off+n) of f, keeping its size.
func punchOS(f *os.File, off, n int64) error {
	const punchHole, keepSize = 0x02, 0x01 // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_KEEP_SIZE
	err := syscall.Fallocate(int(f.Fd()), punchHole|keepSize, off, n)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return errNoPunch
	}
	return err
}
