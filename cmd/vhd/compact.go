package main

import (
	"fmt"
	"io"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCompact(args []string, stdout, stderr io.Writer) int {
	c := newCommand("compact", []string{"compact [--parent PATH] IMAGE"},
		`Give back the space of IMAGE (VHD or VHDX) that holds nothing the disk shows.
A dynamic or differencing image is rewritten beside itself without its
all-zero blocks and without gaps, checked against the image, and renamed over
it; children keep working: a VHD keeps its unique id and parent locators, a
VHDX its DataWriteGuid and metadata (its FileWriteGuid is new), and both keep
their mode and owner. A fixed image gets the all-zero pages of its data
punched out in place. The image must not be in use (a read-write mount); a
pending VHDX log is replayed first. Prints the bytes reclaimed.`, stdout, stderr)
	parent := c.fs.String("parent", "", "use `PATH` as the image's parent instead of its locators (its unique id must still match)")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageErr("want one IMAGE, got %d arguments", len(pos))
	}
	image := pos[0]
	var size int64
	if d, err := format.Open(image, &format.Options{ReadOnly: true, Parent: *parent}); err == nil {
		size = d.Size()
		d.Close()
	}
	bar := newProgress(stderr, size)
	res, err := format.Compact(image, format.CompactOptions{Open: &format.Options{Parent: *parent}, Progress: bar.add})
	bar.finish()
	if err != nil {
		return fail(stderr, err)
	}
	saved := res.Before - res.After
	fmt.Fprintf(stdout, "compacted %s: %s reclaimed (stored %s -> %s; file %s -> %s", image,
		humanSize(max(saved, 0)), humanSize(res.Before), humanSize(res.After), humanSize(res.FileBefore), humanSize(res.FileAfter))
	if res.BlocksFreed > 0 {
		fmt.Fprintf(stdout, "; %d all-zero block(s) released", res.BlocksFreed)
	}
	fmt.Fprintln(stdout, ")")
	return exitOK
}
