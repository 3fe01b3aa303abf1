//go:build !linux

package vhdx

import "os"

// preallocate leaves the range sparse: no portable preallocation.
func preallocate(f *os.File, off, n int64) error { return nil }

// openReadNoBlock opens path read-only (the caller checked it is a regular
// file).
func openReadNoBlock(path string) (*os.File, error) { return os.Open(path) }

// punchOS cannot punch holes portably.
func punchOS(f *os.File, off, n int64) error { return errNoPunch }
