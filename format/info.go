package format

import (
	"fmt"
	"strings"
	"time"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// LayerInfo describes one image of a chain, as `vhd info` shows it.
type LayerInfo struct {
	Path            string        `json:"path"`
	Format          string        `json:"format"`
	Type            string        `json:"type"`
	VirtualSize     int64         `json:"virtual_size"`
	BlockSize       int64         `json:"block_size,omitempty"`
	Blocks          int64         `json:"blocks,omitempty"`
	AllocatedBlocks int64         `json:"allocated_blocks,omitempty"`
	FileSize        int64         `json:"file_size"`
	Creator         string        `json:"creator"`
	CreatorVersion  string        `json:"creator_version"`
	CreatorHost     string        `json:"creator_host"`
	Created         time.Time     `json:"created"`
	UniqueID        string        `json:"unique_id"`
	Geometry        string        `json:"geometry"`
	GeometrySize    int64         `json:"geometry_size"`
	FooterSource    FooterSource  `json:"footer_source"`
	SavedState      bool          `json:"saved_state,omitempty"`
	Hidden          bool          `json:"hidden,omitempty"`
	ParentUniqueID  string        `json:"parent_unique_id,omitempty"`
	ParentTimestamp *time.Time    `json:"parent_timestamp,omitempty"`
	ParentName      string        `json:"parent_name,omitempty"`
	Locators        []LocatorInfo `json:"locators,omitempty"`
	// FoundVia says how this image was found as its child's parent ("W2ru",
	// "W2ku (basename)", "--parent", …); empty for the top image.
	FoundVia string `json:"found_via,omitempty"`
	FoundAs  string `json:"found_as,omitempty"` // the path as the child records it
	// VHDX holds the structures of a VHDX image (headers, log, regions,
	// metadata, BAT counts, parent locator); nil for a VHD.
	VHDX *vhdx.Info `json:"vhdx,omitempty"`
	// Error says why a VHDX image's details could not be read.
	Error string `json:"error,omitempty"`
}

// LocatorInfo describes one parent locator.
type LocatorInfo struct {
	Code   string `json:"code"`
	Offset int64  `json:"offset"`
	Space  int64  `json:"space"`
	Length int64  `json:"length"`
	Path   string `json:"path,omitempty"` // decoded, for W2ku, W2ru, MacX
}

var typeNames = map[uint32]string{TypeFixed: "fixed", TypeDynamic: "dynamic", TypeDifferencing: "differencing"}

// Layers describes every image of the chain, the opened image first.
func (d *Disk) Layers() []LayerInfo {
	out := make([]LayerInfo, len(d.layers))
	for i, ll := range d.layers {
		l, ok := ll.(*layer)
		if !ok {
			li := LayerInfo{Path: ll.Path(), Format: ll.Format(), VirtualSize: ll.Size(),
				FoundVia: d.found[i].Source, FoundAs: d.found[i].Raw}
			if xl, ok := ll.(*vhdx.Layer); ok {
				li.Type = xl.Type()
				if info, err := xl.Info(); err != nil {
					li.Error = strings.TrimPrefix(err.Error(), "vhd: ")
				} else {
					li.VHDX, li.FileSize, li.BlockSize, li.Blocks = info, info.FileSize, info.BlockSize, info.Blocks
					b := info.BAT
					li.AllocatedBlocks = b.FullyPresent + b.PartiallyPresent
				}
			}
			out[i] = li
			continue
		}
		f := &l.footer
		c, h, s := f.Cylinders, f.Heads, f.SectorsPerTrack
		li := LayerInfo{
			Path:           l.path,
			Format:         "vhd",
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
			FoundVia:       d.found[i].Source,
			FoundAs:        d.found[i].Raw,
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
		out[i] = li
	}
	return out
}
