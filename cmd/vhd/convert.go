package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/vhdmount/vhdmount/format"
)

// copyChunk is the unit of reading and zero detection when converting.
const copyChunk = 2 << 20

// source is what convert reads: a VHD chain or a raw file.
type source interface {
	io.ReaderAt
	Size() int64
	// Extent reports whether off is data or a hole and where that run ends.
	Extent(off int64) (bool, int64)
}

func cmdConvert(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("convert", "convert -O raw|fixed|dynamic [-f vhd|raw] [--block-size N] [--force] [--sync] SRC DST", stderr)
	out := fs.String("O", "", "output `format`: raw, fixed or dynamic")
	in := fs.String("f", "", "input `format`: vhd or raw (default: vhd if SRC is one, else raw)")
	bs := fs.String("block-size", "", "block `size` of a dynamic output (default 2M)")
	force := fs.Bool("force", false, "overwrite DST if it exists")
	syncOut := fs.Bool("sync", false, "fsync DST before exiting (like qemu-img and cp, the default leaves it to the kernel)")
	parent := fs.String("parent", "", "use `PATH` as SRC's parent instead of its locators")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 2 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	srcPath, dst := pos[0], pos[1]
	var blockSize int64
	if *bs != "" {
		if blockSize, err = parseSize(*bs); err != nil {
			return fail(stderr, fmt.Errorf("--block-size: %w", err))
		}
	}
	switch *out {
	case "raw", "fixed", "dynamic":
	default:
		return fail(stderr, fmt.Errorf("-O %q: want raw, fixed or dynamic", *out))
	}
	src, closeSrc, err := openSource(srcPath, *in, *parent, stderr)
	if err != nil {
		return fail(stderr, err)
	}
	defer closeSrc()
	if _, err := os.Lstat(dst); err == nil && !*force {
		return fail(stderr, fmt.Errorf("%s exists; use --force to overwrite it", dst))
	}
	// Write beside DST and move it into place only when complete, so a
	// failed or interrupted conversion never leaves a partial DST, nor
	// destroys the DST that --force would replace.
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".vhd-convert")
	os.Remove(tmp)
	if *out == "raw" {
		err = convertToRaw(src, tmp, *syncOut, stderr)
	} else {
		typ := format.TypeDynamic
		if *out == "fixed" {
			typ = format.TypeFixed
		}
		err = convertToVHD(src, tmp, typ, blockSize, *syncOut, stderr)
	}
	if err == nil {
		if *force {
			err = os.Rename(tmp, dst)
		} else if err = os.Link(tmp, dst); err == nil { // fails rather than overwrite
			os.Remove(tmp)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fail(stderr, err)
	}
	return exitOK
}

// openSource opens SRC as a VHD chain, or as a raw file when it is not a VHD
// (or -f raw says so).
func openSource(path, kind, parent string, stderr io.Writer) (source, func(), error) {
	if kind != "" && kind != "vhd" && kind != "raw" {
		return nil, nil, fmt.Errorf("-f %q: want vhd or raw", kind)
	}
	if kind != "raw" {
		d, err := format.Open(path, &format.Options{ReadOnly: true, Parent: parent})
		if err == nil {
			return d, func() { d.Close() }, nil
		}
		if kind == "vhd" || !errors.Is(err, format.ErrNotVHD) {
			return nil, nil, err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	r := &rawSource{f: f, size: fi.Size()}
	if r.size%format.SectorSize != 0 {
		fmt.Fprintf(stderr, "vhd: note: %s is %d bytes, not a multiple of 512; the disk is padded with zeros to %d\n",
			path, r.size, (r.size+511)&^511)
		r.size = (r.size + 511) &^ 511
	}
	return r, func() { f.Close() }, nil
}

// rawSource is a raw disk file; holes are found with SEEK_DATA/SEEK_HOLE.
type rawSource struct {
	f    *os.File
	size int64
}

func (r *rawSource) Size() int64 { return r.size }

func (r *rawSource) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.f.ReadAt(p, off)
	if err == io.EOF && off+int64(len(p)) <= r.size {
		clear(p[n:]) // the zero padding to a whole sector
		return len(p), nil
	}
	return n, err
}

func (r *rawSource) Extent(off int64) (bool, int64) {
	const seekData, seekHole = 3, 4
	data, err := r.f.Seek(off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return false, r.size
	}
	if err != nil { // no SEEK_DATA support: all data
		return true, r.size
	}
	if data > off {
		return false, min(data, r.size)
	}
	hole, err := r.f.Seek(off, seekHole)
	if err != nil || hole <= off {
		return true, r.size
	}
	return true, min(hole, r.size)
}

// copyWorkers is how many chunks are in flight while converting: reads of
// one chunk overlap the zero check and write of others.
const copyWorkers = 4

// copyDisk copies every non-zero chunk of src's data extents into dst, with
// copyWorkers chunks in flight. Chunks are aligned to copyChunk, so they
// match 2 MiB blocks.
func copyDisk(src source, dst io.WriterAt, bar *progress) error {
	type job struct{ off, n int64 }
	jobs := make(chan job, copyWorkers)
	errc := make(chan error, copyWorkers)
	var wg sync.WaitGroup
	for range copyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyChunk)
			for j := range jobs {
				p := buf[:j.n]
				if _, err := src.ReadAt(p, j.off); err != nil && err != io.EOF {
					errc <- err
					return
				}
				if !isZero(p) {
					if _, err := dst.WriteAt(p, j.off); err != nil {
						errc <- err
						return
					}
				}
				bar.add(j.n)
			}
		}()
	}
	var err error
feed:
	for off := int64(0); off < src.Size(); {
		data, end := src.Extent(off)
		if !data {
			bar.add(end - off)
			off = end
			continue
		}
		for off < end {
			n := min(copyChunk-off%copyChunk, end-off)
			select {
			case jobs <- job{off, n}:
			case err = <-errc:
				break feed
			}
			off += n
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

// convertToRaw writes the flat disk to dst, leaving every range the source
// does not store, and every all-zero chunk, as a hole.
func convertToRaw(src source, dst string, syncOut bool, stderr io.Writer) error {
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	bar := newProgress(stderr, src.Size())
	err = copyDisk(src, f, bar)
	bar.finish()
	if err == nil {
		err = f.Truncate(src.Size())
	}
	if err == nil && syncOut {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// convertToVHD creates a fixed or dynamic VHD at dst with src's content; zero
// chunks allocate no block.
func convertToVHD(src source, dst string, typ int, blockSize int64, syncOut bool, stderr io.Writer) error {
	if err := format.Create(dst, format.CreateOptions{Type: typ, Size: src.Size(), BlockSize: blockSize}); err != nil {
		return err
	}
	d, err := format.Open(dst, nil)
	if err != nil {
		return err
	}
	bar := newProgress(stderr, src.Size())
	err = copyDisk(src, d, bar)
	bar.finish()
	if err == nil && syncOut {
		err = d.Sync()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

var zeroChunk = make([]byte, copyChunk)

func isZero(b []byte) bool { return bytes.Equal(b, zeroChunk[:len(b)]) }
