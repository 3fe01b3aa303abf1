package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/format/convert"
)

func cmdConvert(args []string, stdout, stderr io.Writer) int {
	c := newCommand("convert", []string{
		"convert -O raw|fixed|dynamic|vhdx|vhdx-fixed [-f vhd|raw] [--block-size N] [--sector-size 512|4096] [--parent PATH] [--azure] [--force] [--sync] SRC DST",
	}, `Convert SRC (a VHD or VHDX with its chain of parents, or a raw disk) to DST:
a raw disk, a fixed or dynamic VHD, a dynamic VHDX (-O vhdx) or a fixed VHDX
(-O vhdx-fixed). Unallocated and all-zero ranges stay holes or unallocated
blocks (a fixed output is a sparse file). DST is
written beside itself and renamed into place when complete. An existing DST
(with --force) may be a regular file, a symbolic link to one (the target is
written) or, for -O raw, a block device at least as large as the disk (every
byte written in place); anything else is refused, as is a DST in use.`, stdout, stderr)
	out := c.fs.String("O", "", "output format (required): `raw|fixed|dynamic|vhdx|vhdx-fixed` (fixed and dynamic are VHD)")
	in := c.fs.String("f", "", "input format `vhd|raw` (default: a VHD if SRC opens as one; a file named *.vhd, *.vhdx, *.avhd, *.avhdx must; any other file is taken as raw for -O fixed|dynamic only)")
	bs := c.fs.String("block-size", "", "`N`: block size of a dynamic VHD (a power of two from 512 to 256M, default 2M) or of a VHDX (1M to 256M, default 32M)")
	ss := c.fs.Int("sector-size", 0, "logical sector size of a VHDX output: `512|4096` (default: a VHDX SRC's, else 512); SRC's size must be a multiple")
	force := c.fs.Bool("force", false, "replace DST if it exists")
	syncOut := c.fs.Bool("sync", false, "fsync DST before exiting (like cp and qemu-img, the default leaves it to the kernel)")
	parent := c.fs.String("parent", "", "use `PATH` as SRC's parent instead of its locators (its unique id must still match)")
	azure := c.fs.Bool("azure", false, "make an image Azure takes (with -O fixed): the size is rounded up to a whole MiB (zeros at the end); sizes Azure refuses are refused")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	set := c.set()
	if len(pos) != 2 {
		return c.usageErr("want SRC and DST, got %d arguments", len(pos))
	}
	srcPath, dst := pos[0], pos[1]
	o := convert.Options{Replace: *force, Sync: *syncOut}
	switch ext := strings.ToLower(filepath.Ext(dst)); {
	case (*out == "fixed" || *out == "dynamic") && (ext == ".vhdx" || ext == ".avhdx"):
		return c.usageErr("-O %s writes a VHD, but %s is named like a VHDX; use -O vhdx or -O vhdx-fixed", *out, dst)
	case (*out == "vhdx" || *out == "vhdx-fixed") && (ext == ".vhd" || ext == ".avhd"):
		return c.usageErr("-O %s writes a VHDX, but %s is named like a VHD; use -O fixed or -O dynamic", *out, dst)
	}
	switch *out {
	case "raw":
		o.Output = convert.Raw
	case "fixed":
		o.Output = convert.Fixed
	case "dynamic":
		o.Output = convert.Dynamic
	case "vhdx":
		o.Output = convert.VHDX
	case "vhdx-fixed":
		o.Output = convert.VHDXFixed
	case "":
		return c.usageErr("-O is required: raw, fixed, dynamic, vhdx or vhdx-fixed")
	default:
		return c.usageErr("-O %s: want raw, fixed, dynamic, vhdx or vhdx-fixed", quote(*out))
	}
	isVHDX := o.Output == convert.VHDX || o.Output == convert.VHDXFixed
	switch *in {
	case "", convert.InputVHD, convert.InputRaw:
	default:
		return c.usageErr("-f %s: want vhd or raw", quote(*in))
	}
	if set["parent"] && *in == convert.InputRaw {
		return c.usageErr("--parent does not apply to a raw SRC (-f raw)")
	}
	if set["block-size"] {
		if o.Output != convert.Dynamic && !isVHDX {
			return c.usageErr("--block-size applies only to -O dynamic, vhdx and vhdx-fixed")
		}
		var err error
		if isVHDX {
			o.BlockSize, err = parseVHDXBlockSize(*bs)
		} else {
			o.BlockSize, err = parseBlockSize(*bs)
		}
		if err != nil {
			return c.usageErr("--block-size %v", err)
		}
	}
	if set["sector-size"] {
		if !isVHDX {
			return c.usageErr("--sector-size applies only to -O vhdx and vhdx-fixed")
		}
		if *ss != 512 && *ss != 4096 {
			return c.usageErr("--sector-size %d: want 512 or 4096", *ss)
		}
		o.SectorSize = *ss
	}

	if *azure && o.Output != convert.Fixed {
		return c.usageErr("--azure needs -O fixed: Azure takes fixed VHDs only")
	}

	if _, err := os.Lstat(dst); err == nil && !*force {
		return fail(stderr, fmt.Errorf("%s: exists; use --force to replace it", dst))
	}
	src, info, closeSrc, err := convert.OpenSource(srcPath, *in, *parent)
	if err != nil {
		if errors.Is(err, format.ErrNotVHD) && convert.HasDiskImageExt(srcPath) {
			return fail(stderr, fmt.Errorf("%s; use -f raw to read it as a raw disk", message(err)))
		}
		return fail(stderr, err)
	}
	defer closeSrc()
	if info.Guessed {
		if o.Output == convert.Raw {
			return fail(stderr, fmt.Errorf("%s: not a VHD image; use -f raw to copy it as a raw disk", srcPath))
		}
		fmt.Fprintf(stderr, "vhd: note: treating %s as raw: it is not a VHD image\n", srcPath)
	}
	if info.Format == convert.InputRaw && info.RawSize != src.Size() {
		fmt.Fprintf(stderr, "vhd: note: %s is %d bytes, not a multiple of 512; the disk is padded with zeros to %d\n",
			srcPath, info.RawSize, src.Size())
	}

	if isVHDX && o.SectorSize == 0 {
		// A VHDX output keeps a VHDX source's 4096-byte sectors: the
		// partition table and filesystems inside were laid out for them.
		if d, ok := src.(*format.Disk); ok {
			if ls := d.Layers(); len(ls) > 0 && ls[0].VHDX != nil && ls[0].VHDX.LogicalSectorSize == 4096 {
				o.SectorSize = 4096
			}
		}
	}
	if o.SectorSize != 0 && src.Size()%int64(o.SectorSize) != 0 {
		return fail(stderr, fmt.Errorf("%s: %d bytes, not a multiple of the %d-byte sector", srcPath, src.Size(), o.SectorSize))
	}
	if *azure {
		if o.Size, err = azureSize(src.Size(), stderr); err != nil {
			return fail(stderr, err)
		}
	}

	// SIGINT, SIGTERM and SIGHUP stop the conversion; Convert removes its
	// temporary file, and we exit 128 + the signal number.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)
	var caught os.Signal
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case caught = <-sigc:
			cancel()
		case <-ctx.Done():
		}
	}()

	bar := newProgress(stderr, src.Size())
	o.Progress = bar.add
	err = convert.Convert(ctx, src, dst, o)
	bar.finish()
	cancel()
	<-watched
	if caught != nil && err != nil {
		what := "not written"
		if fi, serr := os.Stat(dst); serr == nil && fi.Mode()&os.ModeDevice != 0 {
			what = "the device is partly written"
		}
		fmt.Fprintf(stderr, "vhd: %s: interrupted by a signal (%v); %s\n", dst, caught, what)
		if s, ok := caught.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return exitFail
	}
	if err != nil {
		if errors.Is(err, convert.ErrExists) {
			return fail(stderr, fmt.Errorf("%s; use --force to replace it", message(err)))
		}
		return fail(stderr, err)
	}
	return exitOK
}
