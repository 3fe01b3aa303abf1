// Package vhdfs exposes a virtual disk as a FUSE filesystem whose root holds
// a regular file, disk.raw, and one file per partition of the disk's
// partition table (p1, p2...), each a window onto disk.raw. It is a thin
// translation of FUSE requests onto a Disk's ReadAt, WriteAt, Sync, Extent
// and Discard; it knows nothing of the VHD format.
package vhdfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vhdmount/vhdmount/format"
)

// FileName is the name of the single file in the mount's root.
const FileName = "disk.raw"

// Disk is what vhdfs serves. *format.Disk implements it.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
	Sync() error
	ReadOnly() bool
	// Extent reports whether off is data or a hole, and where that run ends.
	Extent(off int64) (data bool, end int64)
	AllocatedBytes() int64
}

// maxIO is the largest READ and WRITE request negotiated with the kernel.
const maxIO = 1 << 20

// Options for Mount.
type Options struct {
	ReadOnly   bool   // mount read-only (also implied by a read-only Disk)
	AllowOther bool   // let other users access the mount (needs user_allow_other for non-root)
	Debug      bool   // log every FUSE request
	FsName     string // shown as the source in /proc/mounts; the image path
	// NoPartitions leaves out the partition files (p1, p2...) beside
	// disk.raw; without it the disk's partition table is read at mount.
	NoPartitions bool
	// Logf receives errors that are turned into EIO, and a partition table
	// that cannot be used. nil logs with the log package.
	Logf func(format string, args ...any)
	// Notef receives what is worth a line in a log but is no error: that
	// the disk has no partition table. nil drops it.
	Notef func(format string, args ...any)
}

// Mount mounts d at mountpoint and returns the running server. The mount is
// live when Mount returns; call Unmount and Wait on the server to end it.
func Mount(mountpoint string, d Disk, o Options) (*fuse.Server, error) {
	root := NewRoot(d, o)
	mo := fuse.MountOptions{
		FsName:       o.FsName, // source column of /proc/mounts
		Name:         "vhdmount",
		MaxWrite:     maxIO, // also max_read and max_pages: 1 MiB requests
		MaxReadAhead: maxIO,
		AllowOther:   o.AllowOther,
		DirectMount:  true, // mount(2) directly when root; fusermount3 otherwise
		Debug:        o.Debug,
		// Extended attributes are not supported; saves a round trip per
		// security.capability lookup on every write.
		DisableXAttrs: true,
		// Our READ replies are bytes in memory, never a file descriptor to
		// splice from; go-fuse would still take a pipe and write the reply
		// header into it for every READ before falling back to writev, and
		// log a failure for every 1 MiB reply (the pipe cannot grow past
		// fs.pipe-max-size, 1 MiB by default).
		DisableSplice: true,
	}
	if o.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if root.file.ro {
		// "ro" for fusermount3; MS_RDONLY for a direct mount(2).
		mo.Options = append(mo.Options, "ro")
		mo.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	}
	sec := time.Second
	srv, err := fs.Mount(mountpoint, root, &fs.Options{
		MountOptions: mo,
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
		UID:          uint32(os.Getuid()),
		GID:          uint32(os.Getgid()),
	})
	if err == nil {
		for _, m := range root.partLog {
			if m.note {
				if o.Notef != nil {
					o.Notef("%s", m.msg)
				}
			} else {
				root.file.logf("%s", m.msg)
			}
		}
		raiseReadahead(mountpoint)
	}
	return srv, err
}

// readaheadKiB is the kernel readahead asked for disk.raw. FUSE starts every
// mount at 128 KiB (the server can only lower it in INIT), so a sequential
// reader has one request in flight and waits for each: on a cold chain the
// server's reads of its layer files then run one after another. 4 MiB keeps
// several 1 MiB requests in flight, which the server serves in parallel.
const readaheadKiB = 4096

// raiseReadahead sets the mount's readahead through sysfs. Only root may;
// for anyone else, or without sysfs, the kernel's default stays.
func raiseReadahead(mountpoint string) {
	if p := bdiPath(mountpoint); p != "" {
		os.WriteFile(p, []byte(strconv.Itoa(readaheadKiB)), 0)
	}
}

// bdiPath returns the sysfs read_ahead_kb file of the filesystem mounted at
// mountpoint ("" if it cannot tell).
func bdiPath(mountpoint string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return ""
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff)
	minor := dev&0xff | (dev>>12)&^uint64(0xff)
	return fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
}

// Root is the filesystem root: a directory with disk.raw and a file per
// partition.
type Root struct {
	fs.Inode
	file    *File
	parts   []*partFile
	partLog []logLine // what to log about the partition table once mounted
}

// NewRoot returns the root node serving d.
func NewRoot(d Disk, o Options) *Root {
	ro := o.ReadOnly || d.ReadOnly()
	logf := o.Logf
	if logf == nil {
		logf = log.Printf
	}
	r := &Root{file: &File{d: d, ro: ro, logf: logf, mtime: time.Now()}}
	if !o.NoPartitions {
		r.parts, r.partLog = readPartitions(r.file)
	}
	return r
}

// OnAdd adds disk.raw and the partition files when the filesystem is
// mounted.
func (r *Root) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(FileName, ch, false)
	r.addPartitions(ctx)
}

// Statfs reports the disk's size as the filesystem's size, nothing free.
func (r *Root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	const bsize = 4096
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = uint64((r.file.d.Size() + bsize - 1) / bsize)
	out.Files = uint64(1 + len(r.parts))
	out.NameLen = 255
	return 0
}

// File is the disk.raw node.
type File struct {
	fs.Inode
	d     Disk
	ro    bool
	logf  func(format string, args ...any)
	mtime time.Time // mount time, reported as mtime and ctime
}

// Getattr reports the disk's size, mode 0644 (0444 read-only) and, as
// st_blocks, what the chain stores, so sparse-aware tools look for holes.
// It calls Size and AllocatedBytes once each, nothing that walks the chain:
// AllocatedBytes must be cheap (kept up to date by the Disk).
func (f *File) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o644
	if f.ro {
		out.Mode = syscall.S_IFREG | 0o444
	}
	out.Size = uint64(f.d.Size())
	out.Blocks = uint64(f.d.AllocatedBytes()+511) / 512
	out.Blksize = 4096
	out.Nlink = 1
	out.SetTimes(nil, &f.mtime, &f.mtime)
	return 0
}

// Setattr refuses size changes (a disk cannot grow or shrink) and mode or
// owner changes; time updates are accepted and ignored.
func (f *File) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != f.d.Size() {
		return syscall.EPERM
	}
	if _, ok := in.GetMode(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetUID(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetGID(); ok {
		return syscall.EPERM
	}
	return f.Getattr(ctx, fh, out)
}

// Open refuses writing opens of a read-only disk. It lets the kernel keep
// disk.raw's page cache from one open to the next (FOPEN_KEEP_CACHE): the
// cache cannot go stale, since every change to the disk comes through this
// mount (the image is locked against other writers, and parents are never
// written) and the kernel updates or invalidates its cache on each write
// it sends us, buffered or O_DIRECT. Writes still go through to the image
// before write(2) returns (no writeback cache; see docs/performance.md).
func (f *File) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if f.ro && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read reads from the disk. A failed read returns no data at all: go-fuse
// (with splicing off) would send the bytes of a result with status OK over
// the error, and the kernel would take the short read for the end of file.
func (f *File) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := f.d.ReadAt(dest, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if errno := f.errno(err); errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write writes to the disk as a block device does: a write crossing the end
// writes what fits and returns the short count; one starting at or past the
// end is ENOSPC.
func (f *File) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.ro {
		return 0, syscall.EROFS
	}
	size := f.d.Size()
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if off >= size {
		return 0, syscall.ENOSPC
	}
	if rest := size - off; int64(len(data)) > rest {
		data = data[:rest]
	}
	n, err := f.d.WriteAt(data, off)
	return uint32(n), f.errno(err)
}

// Fsync makes every acknowledged write durable.
func (f *File) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	return f.errno(f.d.Sync())
}

// Flush is called on every close; writes are already in the image file.
func (f *File) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

// Discarder is implemented by a Disk that can discard a range: make it read
// as zeros and give back the space it can. *format.Disk implements it.
type Discarder interface {
	Discard(off, n int64) error
}

// fallocate(2) modes.
const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
)

// Allocate serves fallocate(2) on disk.raw for what a block device's discard
// and write-zeroes need (the loop driver sends them so): PUNCH_HOLE|KEEP_SIZE
// and ZERO_RANGE (with or without KEEP_SIZE) make the range read as zeros
// through the Disk's Discard. The part of a range past the end of the disk is
// ignored with KEEP_SIZE; without it, a range past the end would grow the
// file and is refused (EPERM), as are the other modes (EOPNOTSUPP): plain
// preallocation has nothing to do on a disk whose size is fixed.
func (f *File) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	_, _, errno := f.allocate(0, f.d.Size(), off, size, mode)
	return errno
}

// allocate serves fallocate(2) on the window of the disk of length end
// starting at start (the whole disk for disk.raw, a partition for its
// file), with off relative to the window, as Allocate describes with the
// window's end for the disk's. It returns the range of the disk it handed
// to Discard (n = 0 when none), even when Discard failed: part of it may
// be discarded.
func (f *File) allocate(start, end int64, off, size uint64, mode uint32) (doff, n int64, errno syscall.Errno) {
	if f.ro {
		return 0, 0, syscall.EROFS
	}
	dd, ok := f.d.(Discarder)
	if !ok || (mode != fallocPunchHole|fallocKeepSize && mode&^fallocKeepSize != fallocZeroRange) {
		return 0, 0, syscall.EOPNOTSUPP
	}
	if off > math.MaxInt64 || size > math.MaxInt64-off {
		return 0, 0, syscall.EFBIG
	}
	win := uint64(end)
	if mode&fallocKeepSize == 0 && off+size > win {
		return 0, 0, syscall.EPERM
	}
	if off >= win || size == 0 {
		return 0, 0, 0
	}
	doff, n = start+int64(off), int64(min(size, win-off))
	err := dd.Discard(doff, n)
	if errors.Is(err, format.ErrUnsupported) {
		return doff, n, syscall.EOPNOTSUPP // e.g. a format that cannot discard yet
	}
	return doff, n, f.errno(err)
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the chain's allocation.
func (f *File) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	size := f.d.Size()
	if int64(off) >= size {
		return 0, syscall.ENXIO
	}
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	for pos := int64(off); pos < size; {
		data, end := f.d.Extent(pos)
		if data == (whence == seekData) {
			return uint64(pos), 0
		}
		pos = end
	}
	if whence == seekHole {
		return uint64(size), 0 // the end of the file is a hole
	}
	return 0, syscall.ENXIO
}

// errno maps an error from the Disk onto an errno. It is the only place that
// does so.
func (f *File) errno(err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, format.ErrReadOnly), errors.Is(err, format.ErrUnsupported):
		return syscall.EROFS
	case errors.Is(err, format.ErrOutOfRange):
		return syscall.EINVAL
	case errors.As(err, &en):
		return en // ENOSPC, EDQUOT… from the filesystem holding the image
	}
	f.logf("vhdmount: I/O error: %v", err)
	return syscall.EIO
}

var (
	_ fs.NodeOnAdder   = (*Root)(nil)
	_ fs.NodeStatfser  = (*Root)(nil)
	_ fs.NodeGetattrer = (*File)(nil)
	_ fs.NodeSetattrer = (*File)(nil)
	_ fs.NodeOpener    = (*File)(nil)
	_ fs.NodeReader    = (*File)(nil)
	_ fs.NodeWriter    = (*File)(nil)
	_ fs.NodeFsyncer   = (*File)(nil)
	_ fs.NodeFlusher   = (*File)(nil)
	_ fs.NodeLseeker   = (*File)(nil)
	_ fs.NodeAllocater = (*File)(nil)
	_ Discarder        = (*format.Disk)(nil)
	_ Disk             = (*format.Disk)(nil)
)
