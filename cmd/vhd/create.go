package main

import (
	"fmt"
	"io"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCreate(args []string, stdout, stderr io.Writer) int {
	c := newCommand("create", []string{
		"create [-t fixed|dynamic] [--block-size N] [--azure] IMAGE SIZE",
		"create --parent PARENT [--block-size N] IMAGE",
	}, "Create an empty image of SIZE (512, 64M, 10G, 1T...: binary units, a multiple\nof 512 up to 2040G), or an empty differencing disk over PARENT, which gets\nPARENT's size. Never overwrites a file.", stdout, stderr)
	typ := c.fs.String("t", "dynamic", "image type: `fixed|dynamic` (default dynamic)")
	bs := c.fs.String("block-size", "", "`N`: block size of a dynamic or differencing disk, a power of two from 512 to 256M (default: the parent's with --parent, else 2M)")
	parent := c.fs.String("parent", "", "create a differencing disk over `PARENT`")
	azure := c.fs.Bool("azure", false, "make an image Azure takes (with -t fixed): the size is rounded up to a whole MiB; sizes Azure refuses are refused")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	set := c.set()
	o := format.CreateOptions{Parent: *parent}
	var err error
	if *parent != "" {
		switch {
		case set["t"]:
			return c.usageErr("-t does not apply to a differencing disk (--parent)")
		case len(pos) == 2:
			return c.usageErr("a differencing disk gets its parent's size; give no SIZE")
		case len(pos) != 1:
			return c.usageErr("want IMAGE, got %d arguments", len(pos))
		}
	} else {
		if len(pos) != 2 {
			return c.usageErr("want IMAGE and SIZE, got %d arguments", len(pos))
		}
		switch *typ {
		case "fixed":
			o.Type = format.TypeFixed
		case "dynamic":
			o.Type = format.TypeDynamic
		default:
			return c.usageErr("-t %s: want fixed or dynamic", quote(*typ))
		}
		if o.Size, err = parseDiskSize(pos[1]); err != nil {
			return c.usageErr("size %v", err)
		}
	}
	if *azure {
		if o.Type != format.TypeFixed || *parent != "" {
			return c.usageErr("--azure needs -t fixed: Azure takes fixed VHDs only")
		}
		if o.Size, err = azureSize(o.Size, stderr); err != nil {
			return fail(stderr, err)
		}
	}
	if set["block-size"] {
		if o.Type == format.TypeFixed {
			return c.usageErr("--block-size does not apply to a fixed disk")
		}
		if o.BlockSize, err = parseBlockSize(*bs); err != nil {
			return c.usageErr("--block-size %v", err)
		}
	}
	if err := format.Create(pos[0], o); err != nil {
		return fail(stderr, err)
	}
	d, err := format.Open(pos[0], &format.Options{ReadOnly: true})
	if err != nil {
		return fail(stderr, fmt.Errorf("%s: created, but it cannot be reopened: %s", pos[0], message(err)))
	}
	defer d.Close()
	l := d.Layers()[0]
	fmt.Fprintf(stdout, "created %s: %s, %d bytes (%s)", pos[0], l.Type, l.VirtualSize, humanSize(l.VirtualSize))
	if d.Depth() > 0 {
		fmt.Fprintf(stdout, ", parent %s", d.Layers()[1].Path)
	}
	fmt.Fprintln(stdout)
	return exitOK
}

// azureSize rounds a disk size up to a whole MiB for Azure, saying so on
// stderr, and refuses sizes Azure refuses.
func azureSize(size int64, stderr io.Writer) (int64, error) {
	r, err := format.AzureSize(size)
	if err != nil {
		return 0, fmt.Errorf("--azure: %s", message(err))
	}
	if r != size {
		fmt.Fprintf(stderr, "vhd: --azure: size rounded up from %d to %d bytes (%s), a whole MiB\n", size, r, humanSize(r))
	}
	return r, nil
}
