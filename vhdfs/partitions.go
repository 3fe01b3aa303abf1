package vhdfs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vhdmount/vhdmount/internal/partition"
)

// partFile is one partition of the disk's partition table, served beside
// disk.raw as pN (N the partition's number as Linux gives it). It is a
// window onto disk.raw: every request is checked against the partition's
// bounds, moved by its start and handed to the disk.raw node, so both files
// behave alike (errors, read-only, sync) and stay consistent.
//
// The table is read once, when the root is made: partition files do not
// follow a table rewritten through disk.raw until the next mount.
type partFile struct {
	fs.Inode
	f           *File
	num         int
	start, size int64
	// mounted is set once the node is in a mounted tree: from then on a
	// write tells the kernel to drop disk.raw's cached pages it changed.
	mounted bool

	mu        sync.Mutex
	allocKey  int64 // the disk's AllocatedBytes when alloc was counted; -1 none
	allocated int64
}

// partName returns the file name of partition number n.
func partName(n int) string { return fmt.Sprintf("p%d", n) }

// maxExtentCalls bounds the Extent calls one st_blocks count makes; past
// it the rest of the partition is estimated (see partFile.Getattr). A
// variable for the tests.
var maxExtentCalls = 4096

// logLine is a message about the partition table: a note (no table) or
// one for Logf (a table that cannot be used, what the reader repaired).
type logLine struct {
	msg  string
	note bool
}

// readPartitions reads d's partition table and returns the partition files
// (MBR extended containers left out) and what to log about it: no table, a
// table that does not parse, notes the table reader made.
func readPartitions(f *File) ([]*partFile, []logLine) {
	t, err := partition.Read(f.d, f.d.Size())
	if errors.Is(err, partition.ErrNoTable) {
		return nil, []logLine{{"no partition table on the disk: no partition files, only " + FileName, true}}
	}
	if err != nil {
		return nil, []logLine{{fmt.Sprintf("partition table not used, no partition files: %v", err), false}}
	}
	var msgs []logLine
	for _, n := range t.Notes {
		msgs = append(msgs, logLine{fmt.Sprintf("partition table (%s): %s", t.Scheme, n), false})
	}
	var parts []*partFile
	for _, p := range t.Partitions {
		if p.Extended || p.Size <= 0 || p.Number <= 0 {
			continue
		}
		parts = append(parts, &partFile{f: f, num: p.Number, start: p.Start, size: p.Size, allocKey: -1})
	}
	return parts, msgs
}

// Getattr reports what disk.raw reports (mode, times), with the
// partition's size and, as st_blocks, the data within the window. That is
// counted with Extent, at most maxExtentCalls calls, past which the rest
// of the window is estimated at the disk's overall ratio of allocated to
// total bytes; the count is kept while the disk's AllocatedBytes does not
// change, so repeated stats cost one AllocatedBytes call.
func (p *partFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := p.f.Getattr(ctx, fh, out); errno != 0 {
		return errno
	}
	out.Size = uint64(p.size)
	out.Blocks = uint64(p.allocatedBytes()+511) / 512
	return 0
}

// allocatedBytes returns the bytes of data within the window (see Getattr).
func (p *partFile) allocatedBytes() int64 {
	total := p.f.d.AllocatedBytes()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.allocKey == total {
		return p.allocated
	}
	end := p.start + p.size
	var n int64
	pos := p.start
	for calls := 0; pos < end && calls < maxExtentCalls; calls++ {
		data, next := p.f.d.Extent(pos)
		if next <= pos { // no progress: count the rest as estimated
			break
		}
		if next > end {
			next = end
		}
		if data {
			n += next - pos
		}
		pos = next
	}
	if pos < end {
		if size := p.f.d.Size(); size > 0 {
			// Proportional estimate for what was not walked.
			n += int64(float64(end-pos) * float64(total) / float64(size))
		}
	}
	n = min(n, p.size)
	p.allocKey, p.allocated = total, n
	return n
}

// Setattr accepts what disk.raw accepts, with the partition's size as the
// only size.
func (p *partFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if int64(sz) != p.size {
			return syscall.EPERM
		}
		cp := *in
		cp.Valid &^= fuse.FATTR_SIZE
		in = &cp
	}
	var ignored fuse.AttrOut
	if errno := p.f.Setattr(ctx, fh, in, &ignored); errno != 0 {
		return errno
	}
	return p.Getattr(ctx, fh, out)
}

// Open opens as disk.raw does (writing opens of a read-only mount: EROFS),
// except that the kernel never keeps a partition file's page cache from one
// open to the next: the same bytes also change through disk.raw and the
// other partition files, which the kernel does not know.
func (p *partFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := p.f.Open(ctx, flags)
	return fh, fl &^ fuse.FOPEN_KEEP_CACHE, errno
}

// Read reads the window: nothing at or past the partition's end.
func (p *partFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= p.size {
		return fuse.ReadResultData(nil), 0
	}
	if rest := p.size - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	return p.f.Read(ctx, fh, dest, p.start+off)
}

// Write writes into the window as disk.raw does at the disk's end: a write
// crossing the partition's end writes what fits and returns the short
// count; one at or past the end is ENOSPC. Once mounted it invalidates the
// kernel's cache of the bytes written in disk.raw.
func (p *partFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if p.f.ro {
		return 0, syscall.EROFS
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if off >= p.size {
		return 0, syscall.ENOSPC
	}
	if rest := p.size - off; int64(len(data)) > rest {
		data = data[:rest]
	}
	n, errno := p.f.Write(ctx, fh, data, p.start+off)
	if n > 0 && p.mounted {
		// The kernel's pages of disk.raw for these bytes are stale now:
		// drop them before write(2) returns, so a read of disk.raw that
		// follows sees the new bytes. No lock of ours is held here, and
		// the kernel only waits for requests on disk.raw in flight.
		p.f.NotifyContent(p.start+off, int64(n))
	}
	return n, errno
}

// Allocate serves fallocate(2) as disk.raw does (punch hole and zero range
// through the disk's Discard; the same modes, errors and read-only refusal)
// with the partition's end for the disk's: with KEEP_SIZE the part of a
// range past it is ignored, without it a range past it is EPERM. Nothing
// outside the partition is touched. Once mounted it invalidates the
// kernel's cache of the discarded bytes in disk.raw.
func (p *partFile) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	doff, n, errno := p.f.allocate(p.start, p.size, off, size, mode)
	if n > 0 && p.mounted {
		p.f.NotifyContent(doff, n) // as in Write
	}
	return errno
}

// Fsync syncs the disk.
func (p *partFile) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	return p.f.Fsync(ctx, fh, flags)
}

// Flush is called on every close; writes are already in the image file.
func (p *partFile) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	return p.f.Flush(ctx, fh)
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the disk's allocation within
// the window; the partition's end is a hole.
func (p *partFile) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	const seekData, seekHole = 3, 4
	if off >= uint64(p.size) {
		return 0, syscall.ENXIO
	}
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	end := p.start + p.size
	for pos := p.start + int64(off); pos < end; {
		data, next := p.f.d.Extent(pos)
		if data == (whence == seekData) {
			return uint64(pos - p.start), 0
		}
		if next <= pos {
			break
		}
		pos = next
	}
	if whence == seekHole {
		return uint64(p.size), 0
	}
	return 0, syscall.ENXIO
}

var (
	_ fs.NodeGetattrer = (*partFile)(nil)
	_ fs.NodeSetattrer = (*partFile)(nil)
	_ fs.NodeOpener    = (*partFile)(nil)
	_ fs.NodeReader    = (*partFile)(nil)
	_ fs.NodeWriter    = (*partFile)(nil)
	_ fs.NodeFsyncer   = (*partFile)(nil)
	_ fs.NodeFlusher   = (*partFile)(nil)
	_ fs.NodeLseeker   = (*partFile)(nil)
	_ fs.NodeAllocater = (*partFile)(nil)
)

// addPartitions adds the partition files to the root (inode 2 + number).
func (r *Root) addPartitions(ctx context.Context) {
	for _, p := range r.parts {
		ch := r.NewPersistentInode(ctx, p, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2 + uint64(p.num)})
		r.AddChild(partName(p.num), ch, false)
		p.mounted = true
	}
}
