package vhd

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

var typeNames = map[uint32]string{TypeFixed: "fixed", TypeDynamic: "dynamic", TypeDifferencing: "differencing"}

// Type returns the disk type: "fixed", "dynamic" or "differencing".
func (l *Layer) Type() string { return typeNames[l.footer.DiskType] }

// BlockSize returns the block size of a dynamic or differencing disk, 0 for
// a fixed one.
func (l *Layer) BlockSize() int64 { return l.blockSize }

// UniqueID returns the footer's unique id.
func (l *Layer) UniqueID() uuid.UUID { return l.footer.UniqueID }

// ParentID returns the parent unique id a differencing disk records (zero
// for other disks).
func (l *Layer) ParentID() uuid.UUID {
	if l.hdr == nil {
		return uuid.UUID{}
	}
	return l.hdr.ParentUniqueID
}

// Info describes a VHD file, as `vhd info` shows it (package format adds
// how the file was found in its chain).
type Info struct {
	Path            string
	Type            string
	VirtualSize     int64
	BlockSize       int64
	Blocks          int64
	AllocatedBlocks int64
	FileSize        int64
	Creator         string
	CreatorVersion  string
	CreatorHost     string
	Created         time.Time
	UniqueID        string
	Geometry        string
	GeometrySize    int64
	FooterSource    FooterSource
	SavedState      bool
	Hidden          bool
	ParentUniqueID  string
	ParentTimestamp *time.Time
	ParentName      string
	Locators        []LocatorInfo
}

// LocatorInfo describes one parent locator.
type LocatorInfo struct {
	Code   string `json:"code"`
	Offset int64  `json:"offset"`
	Space  int64  `json:"space"`
	Length int64  `json:"length"`
	Path   string `json:"path,omitempty"` // decoded, for W2ku, W2ru, MacX
}

// Info describes the file.
func (l *Layer) Info() Info {
	f := &l.footer
	c, h, s := f.Cylinders, f.Heads, f.SectorsPerTrack
	li := Info{
		Path:           l.path,
		Type:           typeNames[f.DiskType],
		VirtualSize:    l.size,
		FileSize:       l.fileSize,
		Creator:        fourCC(f.CreatorApp),
		CreatorVersion: fmt.Sprintf("%d.%d", f.CreatorVersion>>16, f.CreatorVersion&0xFFFF),
		CreatorHost:    fourCC(f.CreatorHostOS),
		Created:        TimeFromVHD(f.Timestamp),
		UniqueID:       f.UniqueID.String(),
		Geometry:       fmt.Sprintf("%d/%d/%d", c, h, s),
		GeometrySize:   int64(c) * int64(h) * int64(s) * SectorSize,
		FooterSource:   l.footerSrc,
		SavedState:     f.SavedState != 0,
		Hidden:         f.Reserved[0] != 0,
	}
	if !l.fixed() {
		li.BlockSize, li.Blocks = l.blockSize, l.nblocks
		for b := range l.nblocks {
			if l.entry(b) != unallocated {
				li.AllocatedBlocks++
			}
		}
	}
	if f.DiskType == TypeDifferencing {
		ts := TimeFromVHD(l.hdr.ParentTimestamp)
		li.ParentUniqueID = l.hdr.ParentUniqueID.String()
		li.ParentTimestamp = &ts
		li.ParentName = l.parentName
		strs := l.locatorStrings()
		seen := map[string]int{}
		for j := range l.hdr.Locators {
			loc := &l.hdr.Locators[j]
			if !loc.used() {
				continue
			}
			code := fourCC(loc.Code)
			li2 := LocatorInfo{Code: code, Offset: int64(loc.DataOffset), Space: loc.dataSpaceBytes(), Length: int64(loc.DataLength)}
			if s := strs[code]; seen[code] < len(s) {
				li2.Path = s[seen[code]]
				seen[code]++
			}
			li.Locators = append(li.Locators, li2)
		}
	}
	return li
}
