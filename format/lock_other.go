//go:build !unix

package format

func lockFile(f File, exclusive bool) error { return nil }
