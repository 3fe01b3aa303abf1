package vhdfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vhdmount/vhdmount/format"
)

// fakeDisk is a Disk in memory with data in [dataStart, dataEnd) and holes
// elsewhere; err, if set, is returned by every call.
type fakeDisk struct {
	b                  []byte
	ro                 bool
	dataStart, dataEnd int64
	err                error
	synced             int
	allocCalls         int // AllocatedBytes calls
	chainCalls         int // Extent, ReadAt and WriteAt calls
	// extent, if set, answers Extent instead of dataStart and dataEnd.
	extent func(off int64) (bool, int64)
}

func (d *fakeDisk) ReadAt(p []byte, off int64) (int, error) {
	d.chainCalls++
	if d.err != nil {
		return 0, d.err
	}
	if off >= int64(len(d.b)) {
		return 0, io.EOF
	}
	n := copy(p, d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *fakeDisk) WriteAt(p []byte, off int64) (int, error) {
	d.chainCalls++
	if d.err != nil {
		return 0, d.err
	}
	if d.ro {
		return 0, format.ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > int64(len(d.b)) { // as format.Disk
		return 0, format.ErrOutOfRange
	}
	return copy(d.b[off:], p), nil
}

func (d *fakeDisk) Size() int64    { return int64(len(d.b)) }
func (d *fakeDisk) ReadOnly() bool { return d.ro }
func (d *fakeDisk) Sync() error    { d.synced++; return d.err }
func (d *fakeDisk) AllocatedBytes() int64 {
	d.allocCalls++
	return d.dataEnd - d.dataStart
}
func (d *fakeDisk) Extent(off int64) (bool, int64) {
	d.chainCalls++
	if d.extent != nil {
		return d.extent(off)
	}
	switch {
	case off < d.dataStart:
		return false, d.dataStart
	case off < d.dataEnd:
		return true, d.dataEnd
	}
	return false, d.Size()
}

func newFile(d *fakeDisk) *File {
	return NewRoot(d, Options{Logf: func(string, ...any) {}}).file
}

func TestReadWrite(t *testing.T) {
	d := &fakeDisk{b: make([]byte, 8192)}
	for i := range d.b {
		d.b[i] = byte(i)
	}
	f := newFile(d)
	ctx := context.Background()
	dest := make([]byte, 100)
	res, errno := f.Read(ctx, nil, dest, 8150)
	if errno != 0 {
		t.Fatal(errno)
	}
	got, _ := res.Bytes(make([]byte, 100))
	if len(got) != 42 || got[0] != byte(8150%256) {
		t.Fatalf("read at the end: %d bytes, first %d", len(got), got[0])
	}
	if n, errno := f.Write(ctx, nil, []byte{1, 2, 3}, 10); errno != 0 || n != 3 || d.b[11] != 2 {
		t.Fatalf("write: %d, %v", n, errno)
	}
	// Across the end: what fits is written and the count is short, as on
	// a block device (dd onto a disk whose size is not a multiple of bs).
	if n, errno := f.Write(ctx, nil, []byte{7, 8, 9}, 8190); errno != 0 || n != 2 || d.b[8190] != 7 || d.b[8191] != 8 {
		t.Fatalf("write across the end: %d, %v; want 2 bytes written", n, errno)
	}
	for _, off := range []int64{8192, 9000} {
		if n, errno := f.Write(ctx, nil, []byte{1}, off); errno != syscall.ENOSPC || n != 0 {
			t.Fatalf("write at %d, the end or past it: %d, %v; want ENOSPC", off, n, errno)
		}
	}
	if errno := f.Fsync(ctx, nil, 0); errno != 0 || d.synced != 1 {
		t.Fatalf("fsync: %v, synced %d", errno, d.synced)
	}
}

func TestErrno(t *testing.T) {
	f := newFile(&fakeDisk{})
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{format.ErrReadOnly, syscall.EROFS},
		{fmt.Errorf("wrapped: %w", format.ErrUnsupported), syscall.EROFS},
		{format.ErrOutOfRange, syscall.EINVAL},
		{fmt.Errorf("write: %w", syscall.ENOSPC), syscall.ENOSPC},
		{&format.FormatError{Err: format.ErrCorrupt}, syscall.EIO},
		{errors.New("anything else"), syscall.EIO},
	} {
		if got := f.errno(c.err); got != c.want {
			t.Errorf("errno(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestAttrAndSetattr(t *testing.T) {
	ctx := context.Background()
	d := &fakeDisk{b: make([]byte, 1<<20), dataStart: 4096, dataEnd: 8192}
	f := newFile(d)
	var out fuse.AttrOut
	f.Getattr(ctx, nil, &out)
	if out.Size != 1<<20 || out.Mode != syscall.S_IFREG|0o644 || out.Blocks != 8 {
		t.Fatalf("attr: size %d mode %o blocks %d", out.Size, out.Mode, out.Blocks)
	}
	// GETATTR does no chain-sized work: one AllocatedBytes call each,
	// and up to date (no cache that lags a write).
	d.dataEnd = 12288
	d.allocCalls, d.chainCalls = 0, 0
	f.Getattr(ctx, nil, &out)
	if d.allocCalls != 1 || d.chainCalls != 0 || out.Blocks != 16 {
		t.Fatalf("getattr: %d AllocatedBytes and %d Extent/ReadAt/WriteAt calls, blocks %d; want 1, 0, 16", d.allocCalls, d.chainCalls, out.Blocks)
	}
	in := &fuse.SetAttrIn{}
	in.Valid, in.Size = fuse.FATTR_SIZE, 0
	if errno := f.Setattr(ctx, nil, in, &out); errno != syscall.EPERM {
		t.Errorf("truncate: %v, want EPERM", errno)
	}
	in.Size = 1 << 20
	if errno := f.Setattr(ctx, nil, in, &out); errno != 0 {
		t.Errorf("setting the same size: %v", errno)
	}
	in.Valid = fuse.FATTR_MTIME
	if errno := f.Setattr(ctx, nil, in, &out); errno != 0 {
		t.Errorf("touch: %v", errno)
	}
	ro := newFile(&fakeDisk{b: make([]byte, 512), ro: true})
	ro.Getattr(ctx, nil, &out)
	if out.Mode&0o777 != 0o444 {
		t.Errorf("read-only mode %o", out.Mode&0o777)
	}
	if _, _, errno := ro.Open(ctx, syscall.O_RDWR); errno != syscall.EROFS {
		t.Errorf("open rw on a read-only disk: %v", errno)
	}
}

func TestLseek(t *testing.T) {
	ctx := context.Background()
	f := newFile(&fakeDisk{b: make([]byte, 1<<20), dataStart: 4096, dataEnd: 8192})
	for _, c := range []struct {
		off    uint64
		whence uint32
		want   uint64
		errno  syscall.Errno
	}{
		{0, 3, 4096, 0}, {0, 4, 0, 0}, {4096, 4, 8192, 0}, {5000, 3, 5000, 0},
		{8192, 3, 0, syscall.ENXIO}, {9000, 4, 9000, 0}, {1 << 20, 3, 0, syscall.ENXIO},
	} {
		got, errno := f.Lseek(ctx, nil, c.off, c.whence)
		if got != c.want || errno != c.errno {
			t.Errorf("lseek(%d, %d) = %d, %v; want %d, %v", c.off, c.whence, got, errno, c.want, c.errno)
		}
	}
}
