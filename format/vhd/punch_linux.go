//go:build linux

package vhd

import (
	"os"
	"syscall"
)

const (
	fallocKeepSize  = 0x1 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x2 // FALLOC_FL_PUNCH_HOLE
)

// punchOS deallocates [off, off+n) of f, keeping its size.
func punchOS(f *os.File, off, n int64) error {
	for {
		err := syscall.Fallocate(int(f.Fd()), fallocPunchHole|fallocKeepSize, off, n)
		if err != syscall.EINTR {
			if err == syscall.EOPNOTSUPP || err == syscall.ENOSYS {
				return errNoPunch
			}
			return err
		}
	}
}

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// seekOS asks the filesystem holding f for the next data (or hole) at or
// after off: SEEK_DATA or SEEK_HOLE. ok is false when the filesystem cannot
// tell; ENXIO (no data past off) is reported as pos -1.
func seekOS(f *os.File, off int64, data bool) (pos int64, ok bool) {
	whence := seekHole
	if data {
		whence = seekData
	}
	pos, err := syscall.Seek(int(f.Fd()), off, whence)
	if err == syscall.ENXIO {
		return -1, true
	}
	return pos, err == nil
}

// hostBlocks returns the bytes the filesystem stores for f (st_blocks).
func hostBlocks(f *os.File) (int64, bool) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0, false
	}
	return st.Blocks * 512, true
}
