//go:build unix

package format

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes an advisory flock on f when it is an *os.File: exclusive
// for the image being written, shared for the parents below it. It fails at
// once, never waits, when another process holds a conflicting lock.
func lockFile(f File, exclusive bool) error {
	of, ok := f.(*os.File)
	if !ok {
		return nil
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	err := syscall.Flock(int(of.Fd()), how|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	if errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.ENOSYS) {
		return nil // a filesystem without flock: no protection, but no failure
	}
	return err
}
