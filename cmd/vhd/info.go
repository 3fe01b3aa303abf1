package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/vhdmount/vhdmount/format"
)

func cmdInfo(args []string, stdout, stderr io.Writer) int {
	image, asJSON, parent, code, ok := imageCommand("info", "describe an image and its chain of parents.", args, stdout, stderr)
	if !ok {
		return code
	}
	d, err := format.Open(image, &format.Options{ReadOnly: true, Parent: parent})
	if err != nil {
		return fail(stderr, imageErr(image, err))
	}
	defer d.Close()
	layers := d.Layers()
	if asJSON {
		out := struct {
			VirtualSize    int64              `json:"virtual_size"`
			AllocatedBytes int64              `json:"allocated_bytes"`
			Depth          int                `json:"depth"`
			Layers         []format.LayerInfo `json:"layers"`
		}{d.Size(), d.AllocatedBytes(), d.Depth(), layers}
		if err := writeJSON(stdout, out); err != nil {
			return fail(stderr, err)
		}
		return exitOK
	}
	w := &strings.Builder{}
	fmt.Fprintf(w, "virtual size:   %d bytes (%s)\n", d.Size(), humanSize(d.Size()))
	fmt.Fprintf(w, "allocated:      %s in the chain\n", humanSize(d.AllocatedBytes()))
	fmt.Fprintf(w, "chain depth:    %d\n", d.Depth())
	for i, l := range layers {
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
	io.WriteString(stdout, w.String())
	return exitOK
}
