// Package vhd reads and writes one Microsoft VHD file (Virtual Hard Disk
// Image Format Specification 1.0): fixed, dynamic and differencing disks.
// It knows VHD's on-disk structures — footer, dynamic header, BAT, sector
// bitmaps, parent locators, the blktap batmap — and nothing of chains: Open
// returns a *Layer, which package format stacks with its parents.
//
// A Layer implements the contract of package format/layer: Map and ReadData
// for reads, Extent for allocation, Parent (the locators and header name in
// policy order) and MatchParent (the unique id) for parent search, WriteAt
// and Sync for writes into the top layer, NotifyAlloc so the chain hears of
// blocks allocated and freed. The operations that rewrite a VHD's structures
// are its methods too: Discard, Resize, Relink, Compact, Empty (commit),
// Check, Info, AzureProblems; Create makes new files. Package format opens
// the files (without blocking, regular files only), locks them, finds the
// parents, and calls these.
//
// The policies where implementations disagree (virtual size, footer
// discovery, bitmaps in dynamic disks, parent discovery, where new blocks go
// and in which order they are written) are described in
// docs/format-notes.md.
//
// # Concurrency
//
// ReadAt-side methods (Map, ReadData, Extent) may be called from many
// goroutines at once, also while WriteAt runs: BAT entries are read with
// atomic loads and cached bitmaps are immutable, replaced (not changed) when
// a write sets bits. WriteAt calls to different blocks run in parallel;
// calls to the same block are serialized by a striped lock; growing the
// file is serialized by a per-file mutex. A reader sees a new block only
// once its data and bitmap are written. The structure-rewriting operations
// (Resize, Relink, Compact, Empty) run alone.
//
// # Errors
//
// Errors about a file's contents wrap one of the sentinels (ErrNotVHD,
// ErrChecksum, ErrCorrupt, ErrUnsupported); a *FormatError names the file,
// the field and its offset, with the stored and expected values. No input
// makes the package panic or allocate according to an unchecked number from
// the file.
package vhd
