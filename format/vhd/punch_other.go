//go:build !linux

package vhd

import "os"

func punchOS(f *os.File, off, n int64) error { return errNoPunch }

func seekOS(f *os.File, off int64, data bool) (int64, bool) { return 0, false }

func hostBlocks(f *os.File) (int64, bool) { return 0, false }
