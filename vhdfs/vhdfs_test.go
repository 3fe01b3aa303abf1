package vhdfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
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

// lockedDisk is a fakeDisk safe for the concurrent calls of a real mount.
type lockedDisk struct {
	mu    sync.Mutex
	reads int // ReadAt calls
	fakeDisk
}

func (d *lockedDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	return d.fakeDisk.ReadAt(p, off)
}

func (d *lockedDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fakeDisk.WriteAt(p, off)
}

func (d *lockedDisk) snapshot() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.b)
}

// TestKeepCacheCoherent mounts for real and checks that the mount's
// readahead is raised, that the kernel keeps
// disk.raw's page cache between opens (FOPEN_KEEP_CACHE: a second buffered
// read of the whole file asks the server nothing) and that this cache never
// shows stale data: after the whole file is cached, buffered and O_DIRECT
// writes through other opens reach the disk, and a later open reads them,
// buffered and O_DIRECT, byte for byte as the disk holds them.
func TestKeepCacheCoherent(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "mounting needs root (FUSE direct mount)")
	_, err := os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "mounting needs /dev/fuse")
	const size = 1 << 20
	d := &lockedDisk{fakeDisk: fakeDisk{b: make([]byte, size), dataEnd: size}}
	for i := range d.b {
		d.b[i] = byte(i * 7)
	}
	mnt := t.TempDir()
	srv, err := Mount(mnt, d, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	unmounted := false
	unmount := func() {
		if !unmounted {
			unmounted = true
			if err := srv.Unmount(); err != nil {
				t.Error(err)
			}
			srv.Wait()
		}
	}
	defer unmount()
	if b, err := os.ReadFile(bdiPath(mnt)); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(readaheadKiB) {
		t.Errorf("readahead of the mount: %q, %v; want %d KiB", b, err, readaheadKiB)
	}
	file := filepath.Join(mnt, FileName)
	readAll := func(flags int) []byte {
		t.Helper()
		f, err := os.OpenFile(file, os.O_RDONLY|flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := alignedBuf(t, size)
		if n, err := f.ReadAt(buf, 0); n != size {
			t.Fatalf("read %d bytes: %v", n, err)
		}
		return bytes.Clone(buf)
	}
	writeAt := func(flags int, p []byte, off int64) {
		t.Helper()
		f, err := os.OpenFile(file, os.O_WRONLY|flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := f.WriteAt(p, off); n != len(p) || err != nil {
			t.Fatalf("write %d bytes at %d: %d, %v", len(p), off, n, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	want := d.snapshot()
	if got := readAll(0); !bytes.Equal(got, want) {
		t.Fatal("first read differs from the disk")
	}
	// The whole file is now in the page cache, kept across opens.
	d.mu.Lock()
	d.reads = 0
	d.mu.Unlock()
	if got := readAll(0); !bytes.Equal(got, want) {
		t.Fatal("second read differs from the disk")
	}
	d.mu.Lock()
	reads := d.reads
	d.mu.Unlock()
	if reads != 0 {
		t.Errorf("a second buffered read of the whole file made %d READ requests; want 0 (the page cache is kept across opens)", reads)
	}
	direct := alignedBuf(t, 8192)
	for i := range direct {
		direct[i] = 0xA5
	}
	writeAt(syscall.O_DIRECT, direct, 64<<10)
	writeAt(0, []byte("buffered write, unaligned"), 300<<10+123)
	want = d.snapshot()
	if !bytes.Equal(want[64<<10:72<<10], direct) || string(want[300<<10+123:300<<10+148]) != "buffered write, unaligned" {
		t.Fatal("the writes did not reach the disk")
	}
	if got := readAll(0); !bytes.Equal(got, want) {
		t.Fatalf("buffered read after the writes shows stale data at %d", firstDiff(got, want))
	}
	if got := readAll(syscall.O_DIRECT); !bytes.Equal(got, want) {
		t.Fatalf("O_DIRECT read after the writes differs at %d", firstDiff(got, want))
	}
	unmount()
}

// TestReadErrorThroughMount: a read the disk fails reaches the reader as
// EIO, buffered and O_DIRECT, never as a short read (which the kernel would
// take for the end of the file).
func TestReadErrorThroughMount(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "mounting needs root (FUSE direct mount)")
	_, err := os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "mounting needs /dev/fuse")
	d := &lockedDisk{fakeDisk: fakeDisk{b: make([]byte, 1<<20), dataEnd: 1 << 20}}
	mnt := t.TempDir()
	srv, err := Mount(mnt, d, Options{Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Unmount(); srv.Wait() }()
	d.mu.Lock()
	d.err = &format.FormatError{Err: format.ErrCorrupt}
	d.mu.Unlock()
	for _, flags := range []int{0, syscall.O_DIRECT} {
		f, err := os.OpenFile(filepath.Join(mnt, FileName), os.O_RDONLY|flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf := alignedBuf(t, 64<<10)
		n, err := f.ReadAt(buf, 0)
		f.Close()
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read (flags %#x) of a failing disk: %d bytes, %v; want EIO", flags, n, err)
		}
	}
}

// alignedBuf returns n bytes aligned for O_DIRECT.
func alignedBuf(t *testing.T, n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(b) })
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
