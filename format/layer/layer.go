// Package layer is the contract between the format-neutral chain (package
// format) and the per-format packages (VHD, VHDX). It is a leaf: it imports
// nothing of this module.
//
// A format package opens one image file as a Layer. The chain asks each
// layer, top down, to map a range of the virtual disk into runs: stored in
// this file at some offset, zeros that do not fall through, or "ask the layer
// below". A layer with a parent names it with a ParentRef: candidate paths in
// the format's policy order, and an identity the chain checks on each
// candidate with MatchParent before it accepts it.
package layer

import (
	"errors"
	"io"
	"os"
	"strconv"
)

// File is what a layer is read from and written to. *os.File implements it.
type File interface {
	io.ReaderAt
	io.WriterAt
	Stat() (os.FileInfo, error)
	Truncate(size int64) error
	Sync() error
	Close() error
}

// State says where the bytes of a run come from.
type State uint8

const (
	// Parent: this layer does not store the run; it reads as the layer
	// below shows it, or zeros at the bottom of the chain.
	Parent State = iota
	// Data: stored in this layer's file at Run.FileOff.
	Data
	// Zero: reads as zeros and does not fall through to the layer below
	// (VHDX ZERO, UNMAPPED and UNDEFINED blocks).
	Zero
)

func (s State) String() string {
	switch s {
	case Parent:
		return "parent"
	case Data:
		return "data"
	case Zero:
		return "zero"
	}
	return "invalid"
}

// Run is one piece of a mapped range of the virtual disk.
type Run struct {
	Len     int64
	State   State
	FileOff int64 // where the run's first byte is stored; Data only
}

// Layer is one image file of a chain, as its format package reads it.
// Its methods are safe for concurrent use.
type Layer interface {
	// Path is the file's path as opened (absolute).
	Path() string
	// Format names the format: "vhd" or "vhdx".
	Format() string
	// Size is the virtual size in bytes.
	Size() int64
	// SectorSize is the logical sector size in bytes (512 or 4096).
	SectorSize() int
	// Map appends to runs the runs that cover [off, off+n) of the virtual
	// disk, in order, their lengths adding up to n, and returns the slice.
	// The caller keeps 0 <= off and off+n <= Size(). Neighbouring runs may
	// share a state. An entry of the file's tables that points outside the
	// file or over its metadata is an error wrapping ErrCorrupt, never zeros.
	Map(runs []Run, off, n int64) ([]Run, error)
	// ReadData fills p from the file at off, the FileOff of a Data run (or
	// inside one). A file that ends early is an error wrapping ErrCorrupt.
	ReadData(p []byte, off int64) error
	// Parent returns how to find the layer's parent, or nil when it has none.
	Parent() *ParentRef
	// MatchParent reports whether p, opened from a candidate path, is this
	// layer's parent: nil, or an error wrapping ErrParentMismatch that says
	// what differs (identity, format, sector size).
	MatchParent(p Layer) error
	// Close closes the file.
	Close() error
}

// ParentRef is how a differencing layer names its parent.
type ParentRef struct {
	// Candidates lists the paths to try, in the format's policy order. The
	// first one that opens as a matching parent wins.
	Candidates []Candidate
	// ID is the identity a parent must have, for messages (a UUID or GUID
	// as text).
	ID string
}

// Candidate is one path at which a parent may be.
type Candidate struct {
	Source string // where it came from, e.g. "W2ru", "relative_path", "header name (basename)"
	Raw    string // the path as recorded in the file, printed as it is stored
	Path   string // the path to try on this machine
}

// Extenter is implemented by layers that can tell, without reading sector
// bitmaps, how their allocation units (blocks) are stored: Data for a block
// this file holds (wholly or in part), Zero for a block that reads zeros
// without falling through, Parent for one it does not hold. Extent returns
// the state of the unit at off and the length, at most n, of the run of
// units in that state from off. The chain uses it for SEEK_DATA/SEEK_HOLE,
// allocated-byte counts and sparse copies; a layer without it is mapped
// with Map instead.
type Extenter interface {
	Extent(off, n int64) (State, int64)
}

// Writer is implemented by layers opened for writing. The chain writes
// into its top layer only, through these methods.
type Writer interface {
	// WriteAt writes p at virtual offset off into this layer (never into a
	// parent). The caller keeps 0 <= off and off+len(p) <= Size(). below
	// reads the flat content of the chain below this layer (its parent's
	// view: zeros past the parent's end, or everywhere when the layer has
	// no parent), for the parts of partly written logical sectors the layer
	// does not hold. below never calls back into this layer, so the layer
	// may hold its own locks while it reads it.
	WriteAt(p []byte, off int64, below io.ReaderAt) (int, error)
	// Sync makes every completed write durable.
	Sync() error
}

// AllocNotifier is implemented by writable layers that tell the chain how
// their allocation changes, so that extent answers and allocated-byte
// counts stay current without rescanning. The chain calls NotifyAlloc once,
// after opening a writable top layer and before any write. The layer then
// calls alloc(off, n) with the virtual range of each block it newly
// allocates (after the table entry that publishes it is written), and
// free(off, n) for each block it unallocates. A call with n == 0 says only
// that the layer's extents around off may have changed without a block
// changing state (a hole of its file filled or punched): the chain forgets
// what it remembered of the layer's extents and counts nothing.
type AllocNotifier interface {
	NotifyAlloc(alloc, free func(off, n int64))
}

// Sentinel errors shared by every format. A format package wraps them; the
// chain and the tools test them with errors.Is.
var (
	// ErrNotImage means the file is not an image of the format asked for.
	ErrNotImage = errors.New("not a disk image")
	// ErrChecksum means a stored checksum does not match the structure.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrCorrupt means a structure is present but inconsistent.
	ErrCorrupt = errors.New("corrupt image")
	// ErrUnsupported means a valid image of a kind this program does not serve.
	ErrUnsupported = errors.New("unsupported")
	// ErrParentMismatch means a candidate parent is not the one the child
	// records.
	ErrParentMismatch = errors.New("parent mismatch")
)

// FormatError reports where in which file a structure is broken.
type FormatError struct {
	Path   string // file the problem is in
	Off    int64  // absolute byte offset of the field in that file
	Field  string // structure and field, e.g. "header 1 Checksum"
	Detail string // stored and expected values or other specifics; may be empty
	Err    error  // one of the sentinel errors
}

func (e *FormatError) Error() string {
	s := e.Field + " at 0x" + strconv.FormatInt(e.Off, 16) + ": " + e.Err.Error()
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap returns the sentinel error.
func (e *FormatError) Unwrap() error { return e.Err }

// MismatchError says why a candidate is not the parent a child records. Its
// message is the detail alone (the caller says "parent mismatch"); it wraps
// ErrParentMismatch.
type MismatchError struct{ Detail string }

func (e *MismatchError) Error() string { return e.Detail }

// Unwrap returns ErrParentMismatch.
func (e *MismatchError) Unwrap() error { return ErrParentMismatch }
