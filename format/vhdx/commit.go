package vhdx

import (
	"encoding/binary"
	"fmt"
)

// This file holds what commit (package format) needs of the VHDX files it
// works on.

// NewDataWriteGUID returns a new random GUID for SetNextDataWriteGUID.
func NewDataWriteGUID() (GUID, error) { return newGUID() }

// DataWriteGUID returns the current header's DataWriteGuid.
func (l *Layer) DataWriteGUID() GUID {
	h, _, cur := l.headerState()
	return h[cur].DataWriteGUID
}

// ParentLinkage returns the locator's parent_linkage and parent_linkage2
// (zero when absent).
func (l *Layer) ParentLinkage() (GUID, GUID) { return l.linkage, l.linkage2 }

// Locator returns a copy of the parent locator's key-value pairs.
func (l *Layer) Locator() []LocatorEntry { return append([]LocatorEntry(nil), l.locator...) }

// SetNextDataWriteGUID makes the session's header update (before the first
// write) give the file DataWriteGuid g instead of a random one, so that a
// child can be told the parent's next identity before it changes. It must
// be called before the first write; g must not be zero.
func (l *Layer) SetNextDataWriteGUID(g GUID) error {
	if l.w == nil {
		return ErrReadOnly
	}
	if g.IsZero() {
		return fmt.Errorf("vhdx: %s: a DataWriteGuid cannot be zero", l.path)
	}
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	if l.w.headerDone {
		return fmt.Errorf("vhdx: %s: BUG: SetNextDataWriteGUID after the session's first write", l.path)
	}
	l.w.nextData = g
	return nil
}

// Empty makes every payload block of a differencing file NOT_PRESENT (the
// parent shows through) and gives the space back. Order: the BAT is
// rewritten with every payload entry NOT_PRESENT and the sector bitmap
// entries unchanged, and synced (any mix of old and new payload entries is
// valid, and reads the same once the parent holds the data); then the
// sector bitmap entries become NOT_PRESENT too (no block is
// PARTIALLY_PRESENT any more), synced; then the file is truncated after
// its last structure, and synced. The headers are not updated again: the
// flat view of the chain does not change, so DataWriteGuid stays and the
// file's own children keep matching. The layer must not be used for
// anything but Close afterwards.
func (l *Layer) Empty() error {
	if l.w == nil {
		return ErrReadOnly
	}
	if !l.hasParent {
		return fmt.Errorf("vhdx: %s: BUG: Empty on a file without a parent", l.path)
	}
	w := l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.headerDone {
		if err := l.updateHeaders(false); err != nil {
			return err
		}
		w.headerDone = true
	}
	n := l.batEntries
	if n*8 > l.bat.Length {
		return fmt.Errorf("vhdx: %s: BUG: %d BAT entries exceed the BAT region", l.path, n)
	}
	// The BAT is read and rewritten in pieces of 1 MiB (it may be 512 MiB):
	// only the pieces that change are written.
	const piece = miB / 8
	buf := make([]byte, miB)
	for pass := 0; pass < 2; pass++ {
		changed := false
		for s := int64(0); s < n; s += piece {
			k := min(piece, n-s)
			b := buf[:8*k]
			if err := l.readAt(b, l.bat.Off+8*s, "BAT"); err != nil {
				return err
			}
			dirty := false
			for i := int64(0); i < k; i++ {
				idx := s + i
				isBitmap := idx%(l.chunkRatio+1) == l.chunkRatio
				if isBitmap != (pass == 1) {
					continue
				}
				if binary.LittleEndian.Uint64(b[8*i:]) != 0 {
					binary.LittleEndian.PutUint64(b[8*i:], 0)
					dirty = true
				}
			}
			if dirty {
				if err := l.writeFile(b, l.bat.Off+8*s, thing{"BAT entry", s}); err != nil {
					return err
				}
				changed = true
			}
		}
		if !changed {
			continue
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("vhdx: %s: fsync: %w", l.path, err)
		}
	}
	end := int64(headerAreaEnd)
	for _, a := range l.metaAreas {
		end = max(end, a.end)
	}
	end = (end + miB - 1) &^ (miB - 1)
	if end < l.fileSize {
		if err := l.f.Truncate(end); err != nil {
			return fmt.Errorf("vhdx: %s: truncate to %d bytes: %w", l.path, end, err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("vhdx: %s: fsync: %w", l.path, err)
		}
	}
	return nil
}
