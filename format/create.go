package format

import (
	"fmt"
	"time"

	"github.com/vhdmount/vhdmount/format/vhd"
)

// The VHD names the commands use, from format/vhd.
const (
	TypeFixed        = vhd.TypeFixed        // footer DiskType of a fixed disk
	TypeDynamic      = vhd.TypeDynamic      // footer DiskType of a dynamic disk
	TypeDifferencing = vhd.TypeDifferencing // footer DiskType of a differencing disk
	// SectorSize is the VHD sector size.
	SectorSize = vhd.SectorSize
	// MaxVirtualSize is the largest virtual size Create makes: 2040 GiB.
	MaxVirtualSize = vhd.MaxVirtualSize
	// DefaultBlockSize is the block size of created dynamic and differencing disks.
	DefaultBlockSize = vhd.DefaultBlockSize
)

// FooterSource says which copy of the footer a VHD was opened with.
type FooterSource = vhd.FooterSource

// Footer sources, in the order they are tried.
const (
	FooterAtEnd      = vhd.FooterAtEnd
	FooterShort      = vhd.FooterShort
	FooterCopyAtZero = vhd.FooterCopyAtZero
)

// TimeFromVHD converts a VHD timestamp (seconds since 2000-01-01 UTC).
func TimeFromVHD(ts uint32) time.Time { return vhd.TimeFromVHD(ts) }

// CreateOptions describe a new VHD image.
type CreateOptions = vhd.CreateOptions

// Create writes a new, empty VHD image at path. It refuses to overwrite an
// existing file, and removes what it wrote if it fails. A differencing disk
// (o.Parent set) goes over the image at o.Parent, which must open with its
// whole chain and be a VHD.
func Create(path string, o CreateOptions) error {
	if o.Parent == "" {
		return vhd.Create(path, o, nil)
	}
	d, err := Open(o.Parent, &Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer d.Close()
	top, ok := d.layers[0].(*vhd.Layer)
	if !ok {
		return fmt.Errorf("vhd: %s: %w: a VHD's parent must be a VHD, this is a %s image", o.Parent, ErrUnsupported, d.layers[0].Format())
	}
	return vhd.Create(path, o, top)
}
