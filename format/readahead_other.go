//go:build !linux

package format

const canAdvise = false

func willNeed(f File, off, n int64) error { return nil }
