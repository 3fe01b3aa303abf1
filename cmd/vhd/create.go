package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

func cmdCreate(args []string, stdout, stderr io.Writer) int {
	c := newCommand("create", []string{
		"create [--format vhd|vhdx] [-t fixed|dynamic] [--block-size N] [--sector-size 512|4096] [--azure] IMAGE SIZE",
		"create [--format vhd|vhdx] --parent PARENT [--block-size N] IMAGE",
	}, `Create an empty image of SIZE (512, 64M, 10G, 1T...: binary units; a VHD's
a multiple of 512 up to 2040G, a VHDX's a multiple of its sector size up to
64T), or an empty differencing disk over PARENT, which gets PARENT's size.
The format is VHDX for --format vhdx or an IMAGE named *.vhdx or *.avhdx,
else VHD. A VHDX's parent must be a VHDX, a VHD's a VHD. Never overwrites a
file.`, stdout, stderr)
	fmtFlag := c.fs.String("format", "", "image format `vhd|vhdx` (default: vhdx for an IMAGE named *.vhdx or *.avhdx, else vhd)")
	typ := c.fs.String("t", "dynamic", "image type: `fixed|dynamic` (default dynamic)")
	bs := c.fs.String("block-size", "", "`N`: block size, a power of two: of a dynamic or differencing VHD from 512 to 256M (default: the parent's with --parent, else 2M); of a VHDX from 1M to 256M (default: the parent's with --parent, else 32M)")
	ss := c.fs.Int("sector-size", 0, "logical sector size of a VHDX: `512|4096` (default 512, or the parent's; the physical sector size is 4096)")
	parent := c.fs.String("parent", "", "create a differencing disk over `PARENT`")
	azure := c.fs.Bool("azure", false, "make an image Azure takes (with -t fixed): the size is rounded up to a whole MiB; sizes Azure refuses are refused")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	set := c.set()
	if len(pos) >= 1 {
		ext := strings.ToLower(filepath.Ext(pos[0]))
		isX := ext == ".vhdx" || ext == ".avhdx"
		switch *fmtFlag {
		case "":
			if isX {
				return createVHDX(c, pos, *typ, *bs, *ss, *parent, *azure, stdout, stderr)
			}
		case "vhdx":
			if ext == ".vhd" || ext == ".avhd" {
				return c.usageErr("--format vhdx, but %s is named like a VHD", pos[0])
			}
			return createVHDX(c, pos, *typ, *bs, *ss, *parent, *azure, stdout, stderr)
		case "vhd":
			if isX {
				return c.usageErr("--format vhd, but %s is named like a VHDX", pos[0])
			}
		default:
			return c.usageErr("--format %s: want vhd or vhdx", quote(*fmtFlag))
		}
	}
	if set["sector-size"] {
		return c.usageErr("--sector-size applies only to a VHDX (a VHD's sectors are 512 bytes)")
	}
	o := format.CreateOptions{Parent: *parent}
	var err error
	if code, bad := createArgs(c, *parent != "", set, pos); bad {
		return code
	}
	if *parent == "" {
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
		if *parent != "" && *fmtFlag == "" && strings.Contains(err.Error(), "this is a vhdx image") {
			err = fmt.Errorf("%s; for a VHDX child name IMAGE *.avhdx or *.vhdx, or use --format vhdx", message(err))
		}
		return fail(stderr, err)
	}
	return reportCreated(pos[0], stdout, stderr)
}

// createVHDX is create for a VHDX image.
func createVHDX(c *command, pos []string, typ, bs string, ss int, parent string, azure bool, stdout, stderr io.Writer) int {
	set := c.set()
	o := vhdx.CreateOptions{Parent: parent}
	var err error
	if azure {
		return c.usageErr("--azure applies only to a VHD: Azure takes fixed VHDs only")
	}
	if code, bad := createArgs(c, parent != "", set, pos); bad {
		return code
	}
	if parent == "" {
		switch typ {
		case "fixed":
			o.Fixed = true
		case "dynamic":
		default:
			return c.usageErr("-t %s: want fixed or dynamic", quote(typ))
		}
		if o.Size, err = parseSize(pos[1]); err != nil {
			return c.usageErr("size %v", err)
		}
		if o.Size > vhdx.MaxSize {
			return c.usageErr("size %s is larger than the VHDX limit of 64 TiB", pos[1])
		}
	}
	if set["sector-size"] {
		if ss != 512 && ss != 4096 {
			return c.usageErr("--sector-size %d: want 512 or 4096", ss)
		}
		o.SectorSize = ss
	}
	if o.SectorSize == 0 && parent == "" {
		o.SectorSize = 512
	}
	if parent == "" && o.Size%int64(o.SectorSize) != 0 {
		return c.usageErr("size %s (%d bytes) is not a multiple of the %d-byte sector", pos[1], o.Size, o.SectorSize)
	}
	if set["block-size"] {
		if o.BlockSize, err = parseVHDXBlockSize(bs); err != nil {
			return c.usageErr("--block-size %v", err)
		}
	}
	if err := vhdx.Create(pos[0], o); err != nil {
		return fail(stderr, err)
	}
	return reportCreated(pos[0], stdout, stderr)
}

// reportCreated reopens a created image (with its chain) and says what it is.
func reportCreated(path string, stdout, stderr io.Writer) int {
	pos := []string{path}
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

// createArgs checks the arguments of create that VHD and VHDX share: a
// differencing disk (child) takes IMAGE alone and no -t, another IMAGE and
// SIZE. bad says a usage error was reported, with its exit code.
func createArgs(c *command, child bool, set map[string]bool, pos []string) (code int, bad bool) {
	switch {
	case child && set["t"]:
		return c.usageErr("-t does not apply to a differencing disk (--parent)"), true
	case child && len(pos) == 2:
		return c.usageErr("a differencing disk gets its parent's size; give no SIZE"), true
	case child && len(pos) != 1:
		return c.usageErr("want IMAGE, got %d arguments", len(pos)), true
	case !child && len(pos) != 2:
		return c.usageErr("want IMAGE and SIZE, got %d arguments", len(pos)), true
	}
	return 0, false
}
