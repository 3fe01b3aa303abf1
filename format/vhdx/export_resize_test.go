package vhdx

import "os"

// SetPreallocate replaces the preallocation of a fixed file's new blocks
// (nil: the real one); for tests that simulate a full filesystem.
func SetPreallocate(f func(f *os.File, off, n int64) error) {
	if f == nil {
		f = preallocate
	}
	preallocateFile = f
}

// SetReleaseBatch sets how many blocks a shrink releases per sync (n <= 0:
// the default) and returns the previous value.
func SetReleaseBatch(n int) int {
	old := releaseBatch
	if n <= 0 {
		n = 1 << 16
	}
	releaseBatch = n
	return old
}
