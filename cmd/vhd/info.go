package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/partition"
)

// jsonPartition is one partition in vhd info --json.
type jsonPartition struct {
	Number     int    `json:"number"`
	Scheme     string `json:"scheme"`
	Type       string `json:"type"`
	TypeName   string `json:"type_name,omitempty"`
	Start      int64  `json:"start"`
	Size       int64  `json:"size"`
	Name       string `json:"name,omitempty"`
	GUID       string `json:"guid,omitempty"`
	Attributes string `json:"attributes,omitempty"` // GPT flags in hex
	Bootable   bool   `json:"bootable,omitempty"`
	Extended   bool   `json:"extended,omitempty"`
	Clipped    bool   `json:"clipped,omitempty"`
}

// partitions reads the partition table of the flat disk: nil and no error
// when there is none.
func partitions(d *format.Disk) (*partition.Table, error) {
	t, err := partition.Read(d, d.Size())
	if errors.Is(err, partition.ErrNoTable) {
		return nil, nil
	}
	return t, err
}

func cmdInfo(args []string, stdout, stderr io.Writer) int {
	image, asJSON, parent, code, ok := imageCommand("info", "describe an image and its chain of parents.", args, stdout, stderr)
	if !ok {
		return code
	}
	d, err := format.Open(image, &format.Options{ReadOnly: true, Parent: parent, AllowMissingParent: true})
	if err != nil {
		return fail(stderr, err)
	}
	defer d.Close()
	layers := d.Layers()
	// A missing parent: the images found are described, the gap is marked,
	// and the exit status says the chain is not whole.
	code, missing := exitOK, ""
	var table *partition.Table
	var perr error
	if err := d.MissingParent(); err != nil {
		code, missing = exitFail, message(err)
	} else {
		table, perr = partitions(d)
	}
	if asJSON {
		out := struct {
			VirtualSize    int64              `json:"virtual_size"`
			AllocatedBytes int64              `json:"allocated_bytes"`
			Depth          int                `json:"depth"`
			Layers         []format.LayerInfo `json:"layers"`
			PartitionTable string             `json:"partition_table,omitempty"`
			SectorSize     int                `json:"partition_sector_size,omitempty"`
			DiskID         string             `json:"partition_disk_id,omitempty"`
			Partitions     []jsonPartition    `json:"partitions,omitempty"`
			PartitionNotes []string           `json:"partition_notes,omitempty"`
			PartitionError string             `json:"partition_error,omitempty"`
			MissingParent  string             `json:"missing_parent,omitempty"`
		}{VirtualSize: d.Size(), AllocatedBytes: d.AllocatedBytes(), Depth: d.Depth(), Layers: layers, MissingParent: missing}
		if perr != nil {
			out.PartitionError = message(perr)
		}
		if table != nil {
			out.PartitionTable, out.SectorSize, out.DiskID, out.PartitionNotes = table.Scheme, table.SectorSize, table.DiskID, table.Notes
			for _, p := range table.Partitions {
				out.Partitions = append(out.Partitions, jsonPartition{p.Number, p.Scheme, p.Type, p.TypeName, p.Start, p.Size,
					p.Name, p.GUID, "", p.Bootable, p.Extended, p.Clipped})
				if p.Attributes != 0 {
					out.Partitions[len(out.Partitions)-1].Attributes = fmt.Sprintf("0x%016x", p.Attributes)
				}
			}
		}
		if err := writeJSON(stdout, out); err != nil {
			return fail(stderr, err)
		}
		if missing != "" {
			fmt.Fprintln(stderr, "vhd: "+missing)
		}
		return code
	}
	w := &strings.Builder{}
	fmt.Fprintf(w, "virtual size:   %d bytes (%s)\n", d.Size(), humanSize(d.Size()))
	fmt.Fprintf(w, "allocated:      %s in the chain\n", humanSize(d.AllocatedBytes()))
	fmt.Fprintf(w, "chain depth:    %d\n", d.Depth())
	for i, l := range layers {
		if l.Format == "vhdx" {
			writeVHDXLayer(w, i, l)
			continue
		}
		fmt.Fprintf(w, "\nlayer %d: %s\n", i, l.Path)
		fmt.Fprintf(w, "  type:           %s\n", l.Type)
		fmt.Fprintf(w, "  virtual size:   %d bytes (%s)\n", l.VirtualSize, humanSize(l.VirtualSize))
		fmt.Fprintf(w, "  file size:      %d bytes\n", l.FileSize)
		if l.BlockSize != 0 {
			fmt.Fprintf(w, "  block size:     %d (%s)\n", l.BlockSize, humanSize(l.BlockSize))
			fmt.Fprintf(w, "  blocks:         %d allocated of %d\n", l.AllocatedBlocks, l.Blocks)
		}
		fmt.Fprintf(w, "  creator:        %s %s on %s\n", l.Creator, l.CreatorVersion, l.CreatorHost)
		fmt.Fprintf(w, "  created:        %s\n", l.Created.Format("2006-01-02 15:04:05 UTC"))
		fmt.Fprintf(w, "  unique id:      %s\n", l.UniqueID)
		fmt.Fprintf(w, "  geometry:       %s (%d bytes)\n", l.Geometry, l.GeometrySize)
		fmt.Fprintf(w, "  footer used:    %s\n", l.FooterSource)
		if l.Hidden {
			fmt.Fprintf(w, "  hidden:         yes (XenServer flag)\n")
		}
		if l.SavedState {
			fmt.Fprintf(w, "  saved state:    yes\n")
		}
		if l.FoundVia != "" {
			fmt.Fprintf(w, "  found via:      %s %s\n", l.FoundVia, quote(l.FoundAs))
		}
		if l.ParentUniqueID != "" {
			fmt.Fprintf(w, "  parent uuid:    %s\n", l.ParentUniqueID)
			ts := "0 (not recorded)"
			if !l.ParentTimestamp.Equal(format.TimeFromVHD(0)) {
				ts = l.ParentTimestamp.Format("2006-01-02 15:04:05 UTC")
			}
			fmt.Fprintf(w, "  parent time:    %s\n", ts)
			fmt.Fprintf(w, "  parent name:    %s\n", quote(l.ParentName))
			for _, loc := range l.Locators {
				fmt.Fprintf(w, "  locator %-6s  %s (at 0x%x, %d of %d bytes)\n", loc.Code, quote(loc.Path), loc.Offset, loc.Length, loc.Space)
			}
		}
	}
	if missing != "" {
		fmt.Fprintf(w, "\nlayer %d: MISSING (the parent of %s)\n", len(layers), layers[len(layers)-1].Path)
	}
	writePartitions(w, table, perr)
	io.WriteString(stdout, w.String())
	if missing != "" {
		fmt.Fprintln(stderr, "vhd: "+missing)
	}
	return code
}

// writePartitions prints the partition table after the chain: nothing when
// the disk has none, one line when it cannot be read.
func writePartitions(w io.Writer, t *partition.Table, err error) {
	if err != nil {
		fmt.Fprintf(w, "\npartition table: unreadable: %s\n", message(err))
		return
	}
	if t == nil {
		return
	}
	fmt.Fprintf(w, "\npartition table: %s, %d-byte sectors, disk id %s\n", t.Scheme, t.SectorSize, t.DiskID)
	if len(t.Partitions) == 0 {
		fmt.Fprintf(w, "  no partitions\n")
	}
	for _, p := range t.Partitions {
		typ := p.Type
		if t.Scheme == partition.MBR {
			typ = "0x" + typ
		}
		if p.TypeName != "" {
			typ = p.TypeName + " (" + typ + ")"
		}
		fmt.Fprintf(w, "  p%-3d start %d, size %d (%s), type %s", p.Number, p.Start, p.Size, humanSize(p.Size), typ)
		if p.Name != "" {
			fmt.Fprintf(w, ", name %s", quote(p.Name))
		}
		var flags []string
		if p.Bootable {
			flags = append(flags, "bootable")
		}
		if p.Clipped {
			flags = append(flags, "clipped at the end of the disk")
		}
		if len(flags) > 0 {
			fmt.Fprintf(w, " [%s]", strings.Join(flags, ", "))
		}
		fmt.Fprintln(w)
	}
	for _, n := range t.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// writeVHDXLayer prints what vhd info shows of a VHDX layer.
func writeVHDXLayer(w io.Writer, i int, l format.LayerInfo) {
	fmt.Fprintf(w, "\nlayer %d: %s\n", i, l.Path)
	fmt.Fprintf(w, "  format:         VHDX\n")
	fmt.Fprintf(w, "  type:           %s\n", l.Type)
	fmt.Fprintf(w, "  virtual size:   %d bytes (%s)\n", l.VirtualSize, humanSize(l.VirtualSize))
	if l.Error != "" {
		fmt.Fprintf(w, "  unreadable:     %s\n", l.Error)
	}
	x := l.VHDX
	if x == nil {
		return
	}
	fmt.Fprintf(w, "  file size:      %d bytes\n", x.FileSize)
	fmt.Fprintf(w, "  block size:     %d (%s)\n", x.BlockSize, humanSize(x.BlockSize))
	fmt.Fprintf(w, "  sectors:        %d logical, %d physical\n", x.LogicalSectorSize, x.PhysicalSectorSize)
	b := x.BAT
	fmt.Fprintf(w, "  blocks:         %d: %d fully present, %d partially present, %d not present, %d zero, %d unmapped, %d undefined\n",
		x.Blocks, b.FullyPresent, b.PartiallyPresent, b.NotPresent, b.Zero, b.Unmapped, b.Undefined)
	if x.Creator != "" {
		fmt.Fprintf(w, "  creator:        %s\n", quote(x.Creator))
	}
	for _, h := range x.Headers {
		switch {
		case h.Header == nil:
			fmt.Fprintf(w, "  header %d:       invalid: %s\n", h.Index, h.Error)
		default:
			cur := ""
			if h.Current {
				cur = " (current)"
			}
			fmt.Fprintf(w, "  header %d:       sequence %d%s, data write guid %s\n", h.Index, h.Header.SequenceNumber, cur, h.Header.DataWriteGUID)
		}
	}
	fmt.Fprintf(w, "  region table:   copy %d\n", x.RegionTable)
	log := x.Log.State
	if x.Log.EntriesReplayed > 0 {
		log = fmt.Sprintf("%s (%d entries, sequence %d-%d): the file still needs a replay before it is written", log, x.Log.EntriesReplayed, x.Log.FirstSequence, x.Log.LastSequence)
	}
	fmt.Fprintf(w, "  log:            %s\n", log)
	if l.FoundVia != "" {
		fmt.Fprintf(w, "  found via:      %s %s\n", l.FoundVia, quote(l.FoundAs))
	}
	if x.ParentLocator != nil {
		for _, e := range x.ParentLocator.Entries {
			fmt.Fprintf(w, "  locator %-18s %s\n", e.Key, quote(e.Value))
		}
	}
	for _, warn := range x.Warnings {
		fmt.Fprintf(w, "  warning:        %s\n", warn)
	}
}
