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
