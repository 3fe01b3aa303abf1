package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

func cmdResize(args []string, stdout, stderr io.Writer) int {
	c := newCommand("resize", []string{"resize [--shrink] [--parent PATH] IMAGE [+|-]SIZE"},
		`Change the virtual size of IMAGE (VHD or VHDX) to SIZE (64M, 10G...: binary
units; a VHD's a multiple of 512 up to 2040G, a VHDX's a multiple of its
logical sector size up to 64T), or by +SIZE or -SIZE. Growing adds zeros at
the end; a differencing disk may grow past its parent. Shrinking needs
--shrink and is refused while anything is stored past the new end. The
image must not be in use (a read-write mount). Resize the partitions and
filesystems inside separately.`, stdout, stderr)
	shrink := c.fs.Bool("shrink", false, "allow a smaller size (refused while data lies past it)")
	parent := c.fs.String("parent", "", "use `PATH` as the image's parent instead of its locators (its unique id must still match)")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		return c.usageErr("want IMAGE and SIZE, got %d arguments", len(pos))
	}
	image, arg := pos[0], pos[1]
	size, err := parseSize(strings.TrimLeft(arg, "+-"))
	switch {
	case err != nil:
		return c.usageErr("size %v", err)
	case size > vhdx.MaxSize:
		return c.usageErr("size %s is larger than the VHDX limit of 64 TiB", arg)
	case size%format.SectorSize != 0:
		return c.usageErr("size %s (%d bytes) is not a multiple of 512", arg, size)
	}
	if arg[0] == '+' || arg[0] == '-' {
		d, err := format.Open(image, &format.Options{ReadOnly: true, Parent: *parent})
		if err != nil {
			return fail(stderr, err)
		}
		cur := d.Size()
		d.Close()
		if arg[0] == '+' {
			size = cur + size
		} else {
			size = cur - size
		}
		if size <= 0 || size > vhdx.MaxSize {
			return c.usageErr("size %s: the disk is %d bytes; %d is out of range (512 to 64T)", arg, cur, size)
		}
	}
	old, err := format.Resize(image, size, format.ResizeOptions{Shrink: *shrink, Open: &format.Options{Parent: *parent}})
	if err != nil {
		if old > size && !*shrink {
			return fail(stderr, fmt.Errorf("%s: %d bytes is smaller than the disk (%s); use --shrink", image, size, humanSize(old)))
		}
		return fail(stderr, err)
	}
	if old == size {
		fmt.Fprintf(stdout, "%s: already %d bytes (%s)\n", image, size, humanSize(size))
		return exitOK
	}
	fmt.Fprintf(stdout, "resized %s: %d bytes (%s) -> %d bytes (%s)\n", image, old, humanSize(old), size, humanSize(size))
	return exitOK
}
