package format

import (
	"errors"
	"fmt"
	"strings"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhd"
)

// Sentinel errors. Every error returned by this package that is about the
// contents of an image wraps one of these, so callers can use errors.Is.
// The ones about a VHD's own structures are format/vhd's.
var (
	// ErrNotVHD means no VHD footer was found: the file is not a VHD.
	ErrNotVHD = vhd.ErrNotVHD
	// ErrChecksum means a footer or dynamic header checksum does not match.
	ErrChecksum = vhd.ErrChecksum
	// ErrCorrupt means a structure is present but inconsistent (out of range
	// offsets, overlapping blocks, impossible sizes).
	ErrCorrupt = vhd.ErrCorrupt
	// ErrUnsupported means a valid image of a kind this package does not serve.
	ErrUnsupported = vhd.ErrUnsupported
	// ErrParentNotFound means no candidate path for a differencing disk's
	// parent could be opened.
	ErrParentNotFound = errors.New("vhd: parent not found")
	// ErrParentMismatch means a candidate parent was found but its unique id
	// differs from the one the child records.
	ErrParentMismatch = lay.ErrParentMismatch
	// ErrChain means the chain of parents is unusable: a cycle, or deeper
	// than MaxChainDepth.
	ErrChain = errors.New("vhd: bad parent chain")
	// ErrLocked means an image is being written by another process (or,
	// for a parent, another process writes it or a child of it), so it
	// cannot be opened for writing now.
	ErrLocked = errors.New("vhd: image in use")
	// ErrReadOnly is returned by WriteAt on a disk opened read-only.
	ErrReadOnly = vhd.ErrReadOnly
	// ErrOutOfRange means an offset or length outside the virtual disk.
	ErrOutOfRange = vhd.ErrOutOfRange
)

// FormatError reports where in which file a structure is broken.
type FormatError = vhd.FormatError

// ParentAttempt is one path tried while looking for a parent.
type ParentAttempt struct {
	Source string // where the candidate came from: "W2ru", "W2ku", "MacX", "header name", "--parent", with " (basename)" for a fallback
	Raw    string // the path as recorded in the child
	Path   string // the path that was tried on this machine
	Reason string // why it was rejected
}

// ParentError reports a differencing disk whose parent could not be opened,
// with every path tried and why each was rejected.
type ParentError struct {
	Child      string // path of the child image
	ParentUUID string // the parent unique id the child records
	Tried      []ParentAttempt
	Err        error // ErrParentNotFound or ErrParentMismatch
}

func (e *ParentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vhd: %s: %s (wanted parent uuid %s)", e.Child, strings.TrimPrefix(e.Err.Error(), "vhd: "), e.ParentUUID)
	if len(e.Tried) == 0 {
		b.WriteString("; the image records no parent name or locator")
	}
	for i, a := range e.Tried {
		if i == 0 {
			b.WriteString("; tried: ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s \"%s\" -> %s: %s", a.Source, a.Raw, a.Path, a.Reason) // as stored: a Windows path keeps single backslashes
	}
	return b.String()
}

// Unwrap returns ErrParentNotFound or ErrParentMismatch.
func (e *ParentError) Unwrap() error { return e.Err }
