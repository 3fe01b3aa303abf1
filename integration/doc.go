//go:build linux

// Package integration holds tests that build the real binaries, mount images
// through FUSE and loop-mount the filesystems inside. They need root and
// /dev/fuse: elsewhere they skip with a reason, and in CI they must run.
package integration
