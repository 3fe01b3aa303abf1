package convert

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vhdmount/vhdmount/format"
)

// Source is what Convert reads: a VHD chain (*format.Disk) or a raw disk.
type Source interface {
	io.ReaderAt
	// Size is the virtual disk size in bytes, a multiple of 512.
	Size() int64
	// Extent reports whether off is data or a hole and where that run ends.
	Extent(off int64) (data bool, end int64)
}

// Input formats for OpenSource.
const (
	InputDetect = ""    // VHD if the file is one, else see OpenSource
	InputVHD    = "vhd" // a VHD with its chain of parents
	InputRaw    = "raw" // a flat disk: a regular file or a block device
)

// SourceInfo says how OpenSource read a source.
type SourceInfo struct {
	// Format is InputVHD or InputRaw.
	Format string
	// Guessed is set when the format was not given and the file is not a
	// VHD, so it is taken as raw.
	Guessed bool
	// RawSize is the byte size of a raw source before it was padded to a
	// whole sector; it differs from Size() only when padded.
	RawSize int64
}

// OpenSource opens path as input format in (InputVHD, InputRaw, or
// InputDetect). Detection: a file that opens as a VHD is one; a file whose
// name ends in .vhd, .vhdx, .avhd or .avhdx and does not open is an error
// saying why; any other file that is not a VHD is taken as raw, with
// info.Guessed set. parent overrides the locators of a VHD's parent. Only
// regular files and block devices are opened, never a FIFO or another node
// that could block. Close the source with the returned function.
func OpenSource(path, in, parent string) (Source, SourceInfo, func() error, error) {
	var info SourceInfo
	switch in {
	case InputDetect, InputVHD, InputRaw:
	default:
		return nil, info, nil, fmt.Errorf("input format %q: want vhd or raw", in)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, info, nil, err
	}
	if m := fi.Mode(); !m.IsRegular() && !(m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0) {
		return nil, info, nil, fmt.Errorf("%s: is %s, not a disk file or block device", path, describeMode(m))
	}
	if in != InputRaw {
		d, err := format.Open(path, &format.Options{ReadOnly: true, Parent: parent})
		if err == nil {
			info.Format = InputVHD
			return d, info, d.Close, nil
		}
		if in == InputVHD || !errors.Is(err, format.ErrNotVHD) || HasDiskImageExt(path) {
			return nil, info, nil, err
		}
		info.Guessed = true
	}
	r, err := openRaw(path)
	if err != nil {
		return nil, info, nil, err
	}
	if r.size == 0 {
		r.f.Close()
		return nil, info, nil, fmt.Errorf("%s: is empty: no disk to convert", path)
	}
	info.Format, info.RawSize = InputRaw, r.fileSize
	return r, info, r.f.Close, nil
}

// HasDiskImageExt reports whether path's name ends in .vhd, .vhdx, .avhd or
// .avhdx (any case): a file named like that is meant to be an image.
func HasDiskImageExt(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".vhd", ".vhdx", ".avhd", ".avhdx":
		return true
	}
	return false
}

// describeMode names the kind of a file that is not regular.
func describeMode(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "not a regular file"
}

// rawSource is a raw disk: a regular file (holes found with
// SEEK_DATA/SEEK_HOLE) or a block device (all data), padded with zeros to a
// whole sector.
type rawSource struct {
	f        *os.File
	fileSize int64
	size     int64
}

func openRaw(path string) (*rawSource, error) {
	f, err := openNoBlock(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: size of the device: %w", path, err)
		}
	} else if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: is %s, not a disk file or block device", path, describeMode(fi.Mode()))
	}
	return &rawSource{f: f, fileSize: size, size: (size + format.SectorSize - 1) &^ (format.SectorSize - 1)}, nil
}

func (r *rawSource) Size() int64 { return r.size }

func (r *rawSource) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.f.ReadAt(p, off)
	if err == io.EOF && off+int64(len(p)) <= r.size {
		if off+int64(n) < r.fileSize {
			return n, fmt.Errorf("%s: ends at %d bytes, was %d when the copy began (did it shrink?)", r.f.Name(), off+int64(n), r.fileSize)
		}
		clear(p[n:]) // the zero padding to a whole sector
		return len(p), nil
	}
	return n, err
}

// readFull reads exactly len(p) bytes at off: a short read (a source that
// shrank while it was copied) is an error, never stale bytes in p.
func readFull(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("short read: %d of %d bytes at offset %d: %w", n, len(p), off, io.ErrUnexpectedEOF)
	}
	return err
}

func (r *rawSource) Extent(off int64) (bool, int64) {
	const seekData, seekHole = 3, 4
	data, err := r.f.Seek(off, seekData)
	if err != nil {
		if errors.Is(err, syscall.ENXIO) { // no data from off to the end
			return false, r.size
		}
		return true, r.size // no SEEK_DATA support (or a device): all data
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
