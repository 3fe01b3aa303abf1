// Package convert copies a virtual disk (a VHD or VHDX chain or a raw disk)
// into a raw file, a fixed or dynamic VHD or VHDX, or a block device. The output is written
// beside the destination and renamed into place only when complete, so a
// failed or interrupted conversion leaves no partial file and keeps the one
// it would replace.
package convert

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vhdmount/vhdmount/format"
)

// Output is the format Convert writes.
type Output int

// Output formats.
const (
	Raw       Output = iota + 1 // the flat disk
	Fixed                       // a fixed VHD
	Dynamic                     // a dynamic VHD
	VHDX                        // a dynamic VHDX
	VHDXFixed                   // a fixed VHDX
)

// Options control Convert.
type Options struct {
	// Output is the format to write.
	Output Output
	// BlockSize of a Dynamic output (zero means format.DefaultBlockSize)
	// or of a VHDX output (zero means vhdx.DefaultBlockSize).
	BlockSize int64
	// SectorSize is the logical sector size of a VHDX output, 512 or 4096
	// (the source's size must be a multiple); zero means 512.
	SectorSize int
	// Replace allows an existing destination to be replaced (a regular
	// file) or overwritten (a block device).
	Replace bool
	// Sync fsyncs the output before it is moved into place. A block device
	// is always synced.
	Sync bool
	// Size, if larger than the source's, is the virtual size of a Fixed or
	// Dynamic output: the disk is extended with zeros (vhd convert --azure
	// rounds up to a whole MiB). Zero means the source's size.
	Size int64
	// Progress, if set, is called with the number of bytes of the virtual
	// disk just processed; the calls add up to the source's size. It may be
	// called from several goroutines at once.
	Progress func(n int64)
}

// Errors about the destination; the errors Convert returns wrap them.
var (
	// ErrExists means the destination exists and Options.Replace is not set.
	ErrExists = errors.New("exists")
	// ErrInUse means the destination is locked by another process (a
	// read-write vhdmount mount holds an exclusive flock on its image) or
	// is a device in use (mounted).
	ErrInUse = errors.New("in use")
	// ErrNotWritable means the destination is a kind of file Convert never
	// replaces: a character device, FIFO, socket or directory, a dangling
	// symbolic link, or a block device for a VHD output or too small.
	ErrNotWritable = errors.New("cannot be written")
)

var errInUse = ErrInUse

// pathError is "path: msg", wrapping err for errors.Is.
type pathError struct {
	path, msg string
	err       error
}

func (e *pathError) Error() string { return e.path + ": " + e.msg }
func (e *pathError) Unwrap() error { return e.err }

// copyChunk is the unit of reading and zero detection: 2 MiB chunks aligned
// to the disk, so they match 2 MiB blocks.
const copyChunk = 2 << 20

// copyWorkers is how many chunks are in flight: reads of one chunk overlap
// the zero check and write of others.
const copyWorkers = 4

// Convert writes src's virtual disk to dst in format o.Output.
//
// dst may be a new path, an existing regular file (with o.Replace), a
// symbolic link to one (the target is written, the link stays), or an
// existing block device (with o.Replace, and only for Raw output: every byte
// of the disk, zeros too, is written in place; the device may be larger, and
// the rest of it is left as it was). A regular destination is locked with an
// exclusive flock from the start until the new file replaces it, and is
// refused with ErrInUse when someone else holds a lock; a device is opened
// with O_EXCL, which fails while it is mounted. Any other kind of file is
// refused with ErrNotWritable.
//
// A file output is written to a hidden temporary file beside dst and renamed
// over it only when complete; unallocated ranges and all-zero chunks stay
// holes (raw) or unallocated blocks (dynamic). On any error, or when ctx is
// cancelled (return ctx.Err()), the temporary file is removed and dst is left
// as it was. Errors name dst, never the temporary file.
func Convert(ctx context.Context, src Source, dst string, o Options) error {
	switch o.Output {
	case Raw, Fixed, Dynamic, VHDX, VHDXFixed:
	default:
		return fmt.Errorf("output format %d: want Raw, Fixed, Dynamic, VHDX or VHDXFixed", o.Output)
	}
	if o.BlockSize != 0 && o.Output != Dynamic && o.Output != VHDX && o.Output != VHDXFixed {
		return errors.New("a block size applies only to a dynamic VHD or a VHDX output")
	}
	if o.SectorSize != 0 && o.Output != VHDX && o.Output != VHDXFixed {
		return errors.New("a sector size applies only to a VHDX output")
	}
	if o.Size != 0 && (o.Output == Raw || o.Size < src.Size()) {
		return fmt.Errorf("output size %d: applies only to a fixed or dynamic output at least as large as the source (%d bytes)", o.Size, src.Size())
	}
	d, err := openDest(dst, src.Size(), o)
	if err != nil {
		return err
	}
	defer d.close()
	if d.dev != nil {
		return d.writeDevice(ctx, src, o)
	}
	return d.writeFile(ctx, src, o)
}

// dest is a checked destination.
type dest struct {
	name   string      // DST as the caller gave it, for messages
	path   string      // the file to write: DST with symlinks resolved
	exists bool        // path exists and is a regular file
	mode   os.FileMode // its permissions, for the replacement
	lock   *os.File    // the existing file, flocked until it is replaced
	dev    *os.File    // a block device opened for writing
}

func openDest(dst string, size int64, o Options) (*dest, error) {
	d := &dest{name: dst, path: dst}
	fi, err := os.Lstat(dst)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(dst)
		if errors.Is(err, os.ErrNotExist) {
			return nil, &pathError{dst, "is a symbolic link to a missing file; not writing through it", ErrNotWritable}
		}
		if err != nil {
			return nil, err
		}
		if fi, err = os.Stat(target); err != nil {
			return nil, err
		}
		d.path = target
	}
	m := fi.Mode()
	isBlock := m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0
	if !m.IsRegular() && !isBlock {
		return nil, &pathError{dst, "is " + describeMode(m) + "; convert writes only regular files and block devices", ErrNotWritable}
	}
	if !o.Replace {
		return nil, &pathError{dst, "exists", ErrExists}
	}
	if isBlock {
		if o.Output != Raw {
			return nil, &pathError{dst, "is a block device; only a raw output is written to a device (an image belongs in a file)", ErrNotWritable}
		}
		f, err := openDeviceExclusive(d.path)
		if err != nil {
			if isBusy(err) {
				return nil, &pathError{dst, "device in use (mounted or claimed by another program)", ErrInUse}
			}
			return nil, &pathError{dst, errText(err), err}
		}
		devSize, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, &pathError{dst, "size of the device: " + errText(err), err}
		}
		if devSize < size {
			f.Close()
			return nil, &pathError{dst, fmt.Sprintf("device is %d bytes, smaller than the %d-byte disk", devSize, size), ErrNotWritable}
		}
		d.dev = f
		return d, nil
	}
	f, err := openNoBlock(d.path, os.O_RDONLY)
	if err != nil {
		return nil, &pathError{dst, errText(err), err}
	}
	if err := lockExclusive(f); err != nil {
		f.Close()
		if errors.Is(err, errInUse) {
			return nil, &pathError{dst, "image in use (locked by another process: a read-write vhdmount mount?)", ErrInUse}
		}
		return nil, &pathError{dst, "lock: " + errText(err), err}
	}
	d.exists, d.mode, d.lock = true, fi.Mode().Perm(), f
	return d, nil
}

func (d *dest) close() {
	if d.lock != nil {
		d.lock.Close()
	}
	if d.dev != nil {
		d.dev.Close()
	}
}

// writeDevice writes every byte of the disk into the device, zeros too: a
// device is not assumed to read as zeros.
func (d *dest) writeDevice(ctx context.Context, src Source, o Options) error {
	err := copyDisk(ctx, src, d.dev, true, o.Progress)
	if err == nil {
		err = d.dev.Sync()
	}
	if err == nil {
		err = d.dev.Close()
		d.dev = nil
	}
	if err != nil && ctx.Err() == nil {
		return &pathError{d.name, errText(err), err}
	}
	return err
}

// writeFile writes the output beside d.path and moves it into place.
func (d *dest) writeFile(ctx context.Context, src Source, o Options) (err error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	dir, base := filepath.Split(d.path)
	tmp := filepath.Join(dir, "."+base+".vhd-convert-"+hex.EncodeToString(rnd[:]))
	if abs, aerr := filepath.Abs(tmp); aerr == nil {
		tmp = abs
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
			if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
				err = hideTemp(err, tmp, d.name)
			}
		}
	}()
	switch o.Output {
	case Raw:
		err = writeRaw(ctx, src, tmp, o)
	case VHDX, VHDXFixed:
		err = writeVHDX(ctx, src, tmp, o)
	default:
		err = writeVHD(ctx, src, tmp, o)
	}
	if err != nil {
		return err
	}
	if d.exists {
		if err := os.Chmod(tmp, d.mode); err != nil {
			return err
		}
		// Still holding the lock on the file being replaced.
		return os.Rename(tmp, d.path)
	}
	// A link fails rather than replace a file made meanwhile.
	lerr := os.Link(tmp, d.path)
	if lerr == nil {
		os.Remove(tmp)
		return nil
	}
	if _, err := os.Lstat(d.path); !errors.Is(err, os.ErrNotExist) {
		return &pathError{d.name, "exists (created while converting)", ErrExists}
	}
	// A filesystem without hard links (vfat, some FUSE ones): rename, after
	// checking that nothing took the name.
	return os.Rename(tmp, d.path)
}

func writeRaw(ctx context.Context, src Source, tmp string, o Options) error {
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = copyDisk(ctx, src, f, false, o.Progress)
	if err == nil {
		err = f.Truncate(src.Size())
	}
	if err == nil && o.Sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeVHD(ctx context.Context, src Source, tmp string, o Options) error {
	typ := format.TypeDynamic
	if o.Output == Fixed {
		typ = format.TypeFixed
	}
	if err := format.Create(tmp, format.CreateOptions{Type: typ, Size: max(src.Size(), o.Size), BlockSize: o.BlockSize}); err != nil {
		return err
	}
	d, err := format.Open(tmp, nil)
	if err != nil {
		return err
	}
	err = copyDisk(ctx, src, d, false, o.Progress)
	if err == nil && o.Sync {
		err = d.Sync()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyDisk copies src into dst with copyWorkers chunks in flight. Unless
// all is set, holes of src and all-zero chunks are skipped (dst reads them
// as zeros); with all, every chunk is written.
func copyDisk(ctx context.Context, src Source, dst io.WriterAt, all bool, progress func(int64)) error {
	if progress == nil {
		progress = func(int64) {}
	}
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
				if err := readFull(src, p, j.off); err != nil {
					errc <- &readError{err}
					return
				}
				if all || !isZero(p) {
					if _, err := dst.WriteAt(p, j.off); err != nil {
						errc <- err
						return
					}
				}
				progress(j.n)
			}
		}()
	}
	return feedJobs(ctx, src, copyChunk, all, progress, jobs, errc, &wg, func(off, n int64) job { return job{off, n} })
}

// feedJobs sends src to the workers as jobs made by mk, in disk order, each
// a range that does not cross a multiple of chunk. Unless all is set, holes
// of src are not sent: progress counts them. It stops at the first error a
// worker sends on errc or at the end of ctx, then closes jobs, waits for
// the workers (wg) and returns the first error.
func feedJobs[J any](ctx context.Context, src Source, chunk int64, all bool, progress func(int64),
	jobs chan<- J, errc <-chan error, wg *sync.WaitGroup, mk func(off, n int64) J) error {
	var err error
feed:
	for off := int64(0); off < src.Size(); {
		data, end := true, src.Size()
		if !all {
			data, end = src.Extent(off)
		}
		if !data {
			progress(end - off)
			off = end
			continue
		}
		for off < end {
			n := min(chunk-off%chunk, end-off)
			select {
			case jobs <- mk(off, n):
			case err = <-errc:
				break feed
			case <-ctx.Done():
				err = ctx.Err()
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
			err = ctx.Err()
		}
	}
	return err
}

var zeroChunk = make([]byte, copyChunk)

func isZero(b []byte) bool { return bytes.Equal(b, zeroChunk[:len(b)]) }

// errText is err's message without the "vhd: " prefix of format's errors.
func errText(err error) string { return strings.TrimPrefix(err.Error(), "vhd: ") }

// tempError is an error whose message names the destination instead of the
// temporary file; it unwraps to the original.
type tempError struct {
	msg string
	err error
}

func (e *tempError) Error() string { return e.msg }
func (e *tempError) Unwrap() error { return e.err }

// readError is an error reading the source; its message is the source's.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// hideTemp rewrites err's message so it names dst, not tmp; a message that
// does not name dst at all gets it as a prefix. Errors reading the source
// are returned as they are.
func hideTemp(err error, tmp, dst string) error {
	var re *readError
	if errors.As(err, &re) {
		return re.err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == tmp {
		return &tempError{dst + ": " + errText(pe.Err), err}
	}
	msg := errText(err)
	if strings.Contains(msg, tmp) {
		msg = strings.ReplaceAll(msg, tmp, dst)
	} else if !strings.HasPrefix(msg, dst+":") {
		msg = dst + ": " + msg
	}
	return &tempError{msg, err}
}
