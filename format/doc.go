// Package format reads and writes Microsoft VHD disk images: fixed, dynamic
// and differencing disks, the last with their whole chain of parents. It is
// pure Go and knows nothing of FUSE.
//
// Open returns a Disk: the chain presented as one flat virtual disk of
// Size() bytes, read with ReadAt and written with WriteAt (writes go to the
// opened image only; parents are opened read-only). Create makes new images;
// Check validates the structure of a chain.
//
// The policies where implementations disagree (virtual size, footer
// discovery, bitmaps in dynamic disks, parent discovery, where new blocks go
// and in which order they are written) are described in docs/format-notes.md.
//
// # Concurrency
//
// ReadAt may be called from many goroutines at once, also while WriteAt
// runs: BAT entries are read with atomic loads and cached bitmaps are
// immutable, replaced (not changed) when a write sets bits. WriteAt calls to
// different blocks run in parallel; calls to the same block are serialized
// by a striped lock; growing the file is serialized by a per-image mutex.
// A reader sees a new block only once its data and bitmap are written.
//
// # Errors
//
// Errors about an image's contents wrap one of the sentinels (ErrNotVHD,
// ErrChecksum, ErrCorrupt, ErrUnsupported, ErrParentNotFound,
// ErrParentMismatch, ErrChain); test them with errors.Is. A *FormatError
// names the file, the field and its offset, with the stored and expected
// values; a *ParentError lists every path tried for a missing parent and why
// each was rejected. I/O errors from the file are returned wrapped, never
// mistaken for corruption, and no input makes the package panic or allocate
// according to an unchecked number from the file.
package format
