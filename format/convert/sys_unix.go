//go:build unix

package convert

import (
	"errors"
	"os"
	"syscall"
)

// openNoBlock opens path with O_NONBLOCK, so a FIFO or a device that waits
// for a carrier cannot hang the open; for regular files and block devices
// the flag changes nothing.
func openNoBlock(path string, flag int) (*os.File, error) {
	return os.OpenFile(path, flag|syscall.O_NONBLOCK, 0)
}

// lockExclusive takes an exclusive flock on f without waiting: vhdmount holds
// one on an image it serves read-write. It returns errInUse when another
// process holds a lock. Filesystems without flock give no protection and no
// error.
func lockExclusive(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return errInUse
	case errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.ENOSYS):
		return nil
	}
	return err
}

// openDeviceExclusive opens a block device for writing with O_EXCL, which
// Linux refuses (EBUSY) while the device is mounted or otherwise claimed.
func openDeviceExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_EXCL|syscall.O_NONBLOCK, 0)
}

func isBusy(err error) bool { return errors.Is(err, syscall.EBUSY) }
