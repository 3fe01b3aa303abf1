// Package format reads Microsoft VHD and VHDX disk images and writes VHD
// ones: fixed, dynamic and differencing disks, the last with their whole
// chain of parents. It is pure Go and knows nothing of FUSE.
//
// Open returns a Disk: the chain presented as one flat virtual disk of
// Size() bytes, read with ReadAt and written with WriteAt (writes go to the
// opened image only; parents are opened read-only). Create makes new VHD
// images; Check validates the structure of a chain.
//
// # The chain and its layers
//
// The chain is format-neutral. Each file of it is a layer (the contract is
// package format/layer): Open probes the file (VHDX by its "vhdxfile"
// identifier, else VHD by its footer) and opens it with its format's
// package — format/vhd for VHD, format/vhdx for VHDX. Writes go to the top
// layer through its lay.Writer, which reads the edges of partly written
// sectors from the chain below it; a layer that implements
// lay.AllocNotifier tells the chain of each block it allocates or frees. A read asks each
// layer, top down, to Map the range into runs stored in its file, zeros that
// do not fall through (VHDX ZERO/UNMAPPED blocks), or "ask the layer below".
// A differencing layer names its parent by candidate paths in its format's
// policy order; the chain opens each without blocking, only as a regular
// file, and accepts it when the child's MatchParent does (VHD: unique id;
// VHDX: parent_linkage against the DataWriteGuid). Cycles (the same file
// twice) and chains deeper than MaxChainDepth are refused, and so is a chain
// that mixes formats. Extents are answered at block granularity from the
// layers' tables (lay.Extenter), with a per-layer hint so a forward walk
// reads each table once; AllocatedBytes is one such walk, kept current by
// writes.
//
// The policies where implementations disagree (virtual size, footer
// discovery, bitmaps in dynamic disks, parent discovery, where new blocks go
// and in which order they are written) are described in docs/format-notes.md.
//
// # Concurrency
//
// ReadAt may be called from many goroutines at once, also while WriteAt
// runs; each format package says how (for VHD: atomic BAT loads, immutable
// cached bitmaps, striped block locks; see format/vhd). A reader sees a new
// block only once its data and bitmap are written.
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
