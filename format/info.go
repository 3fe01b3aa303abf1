package format

import (
	"strings"
	"time"

	"github.com/vhdmount/vhdmount/format/vhd"
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
type LocatorInfo = vhd.LocatorInfo

// Layers describes every image of the chain, the opened image first.
func (d *Disk) Layers() []LayerInfo {
	out := make([]LayerInfo, len(d.layers))
	for i, ll := range d.layers {
		l, ok := ll.(*vhd.Layer)
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
		vi := l.Info()
		out[i] = LayerInfo{
			Path: vi.Path, Format: "vhd", Type: vi.Type, VirtualSize: vi.VirtualSize,
			BlockSize: vi.BlockSize, Blocks: vi.Blocks, AllocatedBlocks: vi.AllocatedBlocks,
			FileSize: vi.FileSize, Creator: vi.Creator, CreatorVersion: vi.CreatorVersion,
			CreatorHost: vi.CreatorHost, Created: vi.Created, UniqueID: vi.UniqueID,
			Geometry: vi.Geometry, GeometrySize: vi.GeometrySize, FooterSource: vi.FooterSource,
			SavedState: vi.SavedState, Hidden: vi.Hidden, ParentUniqueID: vi.ParentUniqueID,
			ParentTimestamp: vi.ParentTimestamp, ParentName: vi.ParentName, Locators: vi.Locators,
			FoundVia: d.found[i].Source, FoundAs: d.found[i].Raw,
		}
	}
	return out
}
