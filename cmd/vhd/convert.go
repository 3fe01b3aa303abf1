package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vhdmount/vhdmount/format"
)

// copyChunk is the unit of reading and zero detection when converting.
const copyChunk = 4 << 20

func cmdConvert(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("convert", "convert -O raw [--force] SRC DST", stderr)
	out := fs.String("O", "", "output `format`: raw")
	force := fs.Bool("force", false, "overwrite DST if it exists")
	parent := fs.String("parent", "", "use `PATH` as SRC's parent instead of its locators")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 2 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	src, dst := pos[0], pos[1]
	if *out != "raw" {
		return fail(stderr, fmt.Errorf("-O %q: want raw", *out))
	}
	d, err := format.Open(src, &format.Options{ReadOnly: true, Parent: *parent})
	if err != nil {
		return fail(stderr, err)
	}
	defer d.Close()
	if err := convertToRaw(d, dst, *force, stderr); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}

// convertToRaw writes the flat disk to dst, leaving every range the chain
// does not store, and every all-zero chunk, as a hole.
func convertToRaw(d *format.Disk, dst string, force bool, stderr io.Writer) (err error) {
	flags := os.O_RDWR | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_RDWR | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(dst, flags, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; use --force to overwrite it", dst)
		}
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	bar := newProgress(stderr, d.Size())
	defer bar.finish()
	buf := make([]byte, copyChunk)
	for off := int64(0); off < d.Size(); {
		data, end := d.Extent(off)
		if !data {
			bar.add(end - off)
			off = end
			continue
		}
		for off < end {
			n := min(int64(len(buf)), end-off)
			if _, err := d.ReadAt(buf[:n], off); err != nil && err != io.EOF {
				return err
			}
			if !isZero(buf[:n]) {
				if _, err := f.WriteAt(buf[:n], off); err != nil {
					return err
				}
			}
			off += n
			bar.add(n)
		}
	}
	if err := f.Truncate(d.Size()); err != nil {
		return err
	}
	return f.Sync()
}

var zeroChunk = make([]byte, copyChunk)

func isZero(b []byte) bool { return bytes.Equal(b, zeroChunk[:len(b)]) }
