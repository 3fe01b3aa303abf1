//go:build unix

package format

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// lockFile locks f when it is an *os.File: exclusive for the image being
// written, shared for the parents below it. It fails at once, never waits,
// when another process holds a conflicting lock. Two kinds of locks are
// taken, both released when the file is closed:
//
//   - an advisory flock (LOCK_EX, LOCK_SH), which other vhdmount processes
//     check;
//   - on Linux, the byte-range OFD locks qemu takes on its images (see
//     qemuLock), so qemu, qemu-img and qemu-io do not write an image we
//     write or a parent of it, and we do not write one they use.
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
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return ErrLocked
	case errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.ENOSYS):
		// a filesystem without flock: no protection, but no failure
	case err != nil:
		return err
	}
	return qemuLock(of, exclusive)
}

// qemu's image locking (block/file-posix.c): each block permission bit i
// has a lock byte at qemuPermBase+i, held (read-locked) by every user that
// has the permission, and one at qemuSharedBase+i, held by every user that
// does not let others have it. A user refuses to open when someone holds the
// "shared" byte of a permission it wants, or the "perm" byte of one it does
// not share. The locks are OFD locks (F_OFD_SETLK), owned by the open file.
const (
	qemuPermBase   = 100
	qemuSharedBase = 200

	// Permission bits (include/block/block-common.h).
	qemuConsistentRead = 0 // BLK_PERM_CONSISTENT_READ
	qemuWrite          = 1 // BLK_PERM_WRITE
	qemuResize         = 3 // BLK_PERM_RESIZE

	// fcntl commands for open file description locks (Linux).
	fOFDGetlk = 36
	fOFDSetlk = 37
)

var qemuPermNames = map[int]string{qemuConsistentRead: "consistent read", qemuWrite: "write", qemuResize: "resize"}

// qemuLock takes the locks qemu takes for an image format node's file:
// for the image written (exclusive), the permissions consistent read, write
// and resize, sharing neither write nor resize, as a qemu writer; for a
// parent, consistent read, sharing neither write nor resize, as qemu does
// for a read-only backing file. Then, as qemu does, it checks that no one
// else holds a lock that conflicts, and releases its own when one does.
func qemuLock(f *os.File, exclusive bool) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	perms := []int{qemuConsistentRead}
	if exclusive {
		perms = append(perms, qemuWrite, qemuResize)
	}
	unshared := []int{qemuWrite, qemuResize}
	var bytes []int64
	for _, p := range perms {
		bytes = append(bytes, qemuPermBase+int64(p))
	}
	for _, p := range unshared {
		bytes = append(bytes, qemuSharedBase+int64(p))
	}
	fd := f.Fd()
	var taken []int64
	unlock := func() {
		for _, off := range taken {
			ofdLock(fd, fOFDSetlk, syscall.F_UNLCK, off)
		}
	}
	for _, off := range bytes {
		if _, err := ofdLock(fd, fOFDSetlk, syscall.F_RDLCK, off); err != nil {
			unlock()
			if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.ENOLCK) {
				return nil // no OFD locks here (old kernel, some network filesystems): as qemu, go on without
			}
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) {
				return fmt.Errorf("%w: another process holds qemu lock byte %d", ErrLocked, off)
			}
			return fmt.Errorf("qemu lock byte %d: %w", off, err)
		}
		taken = append(taken, off)
	}
	check := func(off int64, what string) error {
		held, err := ofdLock(fd, fOFDGetlk, syscall.F_WRLCK, off)
		if err != nil {
			return fmt.Errorf("testing qemu lock byte %d: %w", off, err)
		}
		if held {
			return fmt.Errorf("%w: a qemu process (or another user of qemu's image locks) %s (lock byte %d)", ErrLocked, what, off)
		}
		return nil
	}
	for _, p := range perms {
		if err := check(qemuSharedBase+int64(p), fmt.Sprintf("does not share the %q permission", qemuPermNames[p])); err != nil {
			unlock()
			return err
		}
	}
	for _, p := range unshared {
		if err := check(qemuPermBase+int64(p), fmt.Sprintf("has the %q permission", qemuPermNames[p])); err != nil {
			unlock()
			return err
		}
	}
	return nil
}

// ofdLock sets (cmd fOFDSetlk) or tests (fOFDGetlk) an OFD lock of type typ
// on the byte at off. For a test it reports whether another open file holds
// a conflicting lock.
func ofdLock(fd uintptr, cmd int, typ int16, off int64) (bool, error) {
	lk := syscall.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	if err := syscall.FcntlFlock(fd, cmd, &lk); err != nil {
		return false, err
	}
	return cmd == fOFDGetlk && lk.Type != syscall.F_UNLCK, nil
}
