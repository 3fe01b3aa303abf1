package vhd

import (
	"encoding/binary"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
)

// RelinkResult says what Relink wrote.
type RelinkResult struct {
	Child, Parent string   // absolute paths
	HeaderName    string   // the parent name now in the header
	InPlace       []string // locator codes rewritten in their reserved space
	Relocated     []string // locator codes moved to new space at the end of the file
	Added         []string // locator codes added in free slots
}

// Relink rewrites the parent locators and the header's parent name of this
// differencing layer to name newParent (an absolute path), as format's
// Relink describes; the caller has checked that newParent is this layer's
// parent (MatchParent). Every other field of the footer and the header is
// kept.
func (l *Layer) Relink(newParent string) (*RelinkResult, error) {
	if l.readOnly {
		return nil, ErrReadOnly
	}
	cl, child := l, l.path
	rel, err := filepath.Rel(filepath.Dir(child), newParent)
	if err != nil {
		return nil, fmt.Errorf("vhd: cannot name %s relative to %s: %w", newParent, child, err)
	}
	res := &RelinkResult{Child: child, Parent: newParent}
	h := *cl.hdr
	res.HeaderName = rel
	name := encodeUTF16(rel, binary.BigEndian)
	if len(name) > len(h.ParentUnicodeName) {
		res.HeaderName, name = newParent, encodeUTF16(newParent, binary.BigEndian)
	}
	if len(name) > len(h.ParentUnicodeName) {
		return nil, fmt.Errorf("vhd: %s: neither the relative path %q nor the absolute one fits the header's 256 UTF-16 units", child, rel)
	}
	h.ParentUnicodeName = [512]byte{}
	copy(h.ParentUnicodeName[:], name)

	payload := map[[4]byte][]byte{
		codeW2ku: encodeUTF16(strings.ReplaceAll(newParent, "/", `\`), binary.LittleEndian),
		codeW2ru: encodeUTF16(`.\`+strings.ReplaceAll(rel, "/", `\`), binary.LittleEndian),
		codeMacX: []byte((&url.URL{Scheme: "file", Path: newParent}).String()),
	}
	type put struct {
		off  int64
		data []byte
	}
	var inPlace []put
	var moved []int // slots that get new space
	have := map[[4]byte]bool{}
	for i := range h.Locators {
		loc := &h.Locators[i]
		data, ok := payload[loc.Code]
		if !ok {
			continue
		}
		have[loc.Code] = true
		space := loc.dataSpaceBytes()
		// Pad over what the old payload held, inside the reserved space.
		b := make([]byte, min(space, max(int64(len(data)), int64(loc.DataLength))))
		copy(b, data)
		if int64(len(data)) <= space && loc.DataOffset <= uint64(cl.fileSize) && cl.freeFor(int64(loc.DataOffset), int64(len(b))) {
			inPlace = append(inPlace, put{int64(loc.DataOffset), b})
			loc.DataLength = uint32(len(data))
			res.InPlace = append(res.InPlace, fourCC(loc.Code))
			continue
		}
		moved = append(moved, i)
		res.Relocated = append(res.Relocated, fourCC(loc.Code))
	}
	for _, code := range [][4]byte{codeW2ku, codeW2ru} {
		if have[code] {
			continue
		}
		for i := range h.Locators {
			if !h.Locators[i].used() {
				h.Locators[i] = ParentLocator{Code: code}
				moved = append(moved, i)
				res.Added = append(res.Added, fourCC(code))
				break
			}
		}
	}

	// New space, past everything the file holds or any entry claims.
	var area []byte
	var pos int64
	if len(moved) > 0 {
		cl.mu.Lock()
		pos = roundUp(max(cl.dataEnd, cl.dataLimit.Load()), SectorSize)
		cl.mu.Unlock()
		for _, i := range moved {
			loc := &h.Locators[i]
			data := payload[loc.Code]
			space := max(locatorSpace, roundUp(int64(len(data)), SectorSize))
			loc.DataOffset, loc.DataSpace, loc.DataLength = uint64(pos+int64(len(area))), uint32(space), uint32(len(data))
			b := make([]byte, space)
			copy(b, data)
			area = append(area, b...)
		}
		if end := pos + int64(len(area)); end/SectorSize >= int64(unallocated) {
			return nil, fmt.Errorf("%w: %s would grow past what a BAT entry can address", ErrUnsupported, child)
		}
	}
	raw, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if len(area) > 0 {
		end := pos + int64(len(area))
		if err := cl.writeFile(cl.footerRaw[:], end, "footer"); err != nil {
			return nil, err
		}
		if err := cl.writeFile(area, pos, "new parent locator space"); err != nil {
			return nil, err
		}
	}
	for _, p := range inPlace {
		if err := cl.writeFile(p.data, p.off, "parent locator data"); err != nil {
			return nil, err
		}
	}
	if err := cl.sync(); err != nil {
		return nil, err
	}
	if err := cl.writeFile(raw, cl.hdrOff, "dynamic header"); err != nil {
		return nil, err
	}
	if err := cl.sync(); err != nil {
		return nil, err
	}
	return res, nil
}

// freeFor reports whether n bytes at off, a locator's data, lie before
// the footer and clear of every block and every other metadata area, so
// they may be written in place.
func (l *Layer) freeFor(off, n int64) bool {
	end := off + n
	if end > l.footerOff {
		return false
	}
	for _, m := range l.meta {
		if strings.HasPrefix(m.what, "parent locator ") && m.start == off {
			continue // the locator itself
		}
		if off < m.end && end > m.start {
			return false
		}
	}
	for blk := range l.nblocks {
		if e := l.entry(blk); e != unallocated {
			s := int64(e) * SectorSize
			if off < s+l.bitmapSize+l.blockSize && end > s {
				return false
			}
		}
	}
	return true
}
