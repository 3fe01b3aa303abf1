package main

import (
	"fmt"
	"io"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCreate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("create", "create [-t fixed|dynamic] [--block-size N] IMAGE SIZE\n       vhd create --parent PARENT IMAGE", stderr)
	typ := fs.String("t", "dynamic", "image `type`: fixed or dynamic")
	bs := fs.String("block-size", "", "block `size` of a dynamic or differencing disk, a power of two (default 2M)")
	parent := fs.String("parent", "", "create a differencing disk over `PARENT` (its size is used)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	o := format.CreateOptions{Parent: *parent}
	if *bs != "" {
		if o.BlockSize, err = parseSize(*bs); err != nil {
			return fail(stderr, fmt.Errorf("--block-size: %w", err))
		}
	}
	switch {
	case *parent != "" && len(pos) == 1:
	case *parent == "" && len(pos) == 2:
		if o.Size, err = parseSize(pos[1]); err != nil {
			return fail(stderr, err)
		}
		switch *typ {
		case "fixed":
			o.Type = format.TypeFixed
		case "dynamic":
			o.Type = format.TypeDynamic
		default:
			return fail(stderr, fmt.Errorf("-t %q: want fixed or dynamic", *typ))
		}
	default:
		fs.Usage()
		return exitUsage
	}
	if err := format.Create(pos[0], o); err != nil {
		return fail(stderr, err)
	}
	d, err := format.Open(pos[0], &format.Options{ReadOnly: true})
	if err != nil {
		return fail(stderr, fmt.Errorf("created %s but cannot reopen it: %w", pos[0], err))
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
