//go:build !unix

package convert

import "os"

func openNoBlock(path string, flag int) (*os.File, error) { return os.OpenFile(path, flag, 0) }

func lockExclusive(f *os.File) error { return nil }

func openDeviceExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY, 0)
}

func isBusy(err error) bool { return false }
