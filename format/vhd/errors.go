package vhd

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error of this package about the contents of an
// image wraps one of these, so callers can use errors.Is. Package format
// returns the same values under the same names.
var (
	// ErrNotVHD means no VHD footer was found: the file is not a VHD.
	ErrNotVHD = errors.New("vhd: not a VHD image")
	// ErrChecksum means a footer or dynamic header checksum does not match.
	ErrChecksum = errors.New("vhd: checksum mismatch")
	// ErrCorrupt means a structure is present but inconsistent (out of range
	// offsets, overlapping blocks, impossible sizes).
	ErrCorrupt = errors.New("vhd: corrupt image")
	// ErrUnsupported means a valid image of a kind this package does not serve.
	ErrUnsupported = errors.New("vhd: unsupported")
	// ErrReadOnly is returned by a write into a layer opened read-only.
	ErrReadOnly = errors.New("vhd: disk is read-only")
	// ErrOutOfRange means an offset or length outside the virtual disk.
	ErrOutOfRange = errors.New("vhd: offset out of range")
)

// FormatError reports where in which file a structure is broken.
type FormatError struct {
	Path   string // file the problem is in
	Off    int64  // absolute byte offset of the field in that file
	Field  string // structure and field, e.g. "footer Checksum"
	Detail string // want/have values or other specifics, may be empty
	Err    error  // one of the sentinel errors
}

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("vhd: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s at 0x%x: %s", e.Field, e.Off, strings.TrimPrefix(e.Err.Error(), "vhd: "))
	if e.Detail != "" {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(path string, off int64, field string, err error, detail string, args ...any) error {
	if len(args) > 0 {
		detail = fmt.Sprintf(detail, args...)
	}
	return &FormatError{Path: path, Off: off, Field: field, Detail: detail, Err: err}
}
