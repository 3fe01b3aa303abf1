package vhdfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// putEntry writes an MBR (or EBR) entry i into sector s, written here from
// the on-disk layout, not by the partition package: type at byte 4, first
// sector and sector count as little-endian uint32 at bytes 8 and 12.
func putEntry(s []byte, i int, typ byte, start, sectors uint32) {
	e := s[446+16*i:]
	e[4] = typ
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], sectors)
	s[510], s[511] = 0x55, 0xAA
}

// mbrDisk is a 1 MiB disk (2048 sectors) with p1 (sectors 64+512), p2
// (576+256), an extended partition p3 (1024+1024) holding one logical
// partition p5 (EBR at 1024, data at 1088+128), every byte at offset o
// holding byte(o/512) ^ byte(o) so windows are recognisable.
func mbrDisk() *fakeDisk {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i/512) ^ byte(i)
	}
	clear(b[:512])
	putEntry(b[:512], 0, 0x83, 64, 512)
	putEntry(b[:512], 1, 0x07, 576, 256)
	putEntry(b[:512], 2, 0x05, 1024, 1024)
	ebr := b[1024*512 : 1025*512]
	clear(ebr)
	putEntry(ebr, 0, 0x83, 64, 128)
	return &fakeDisk{b: b}
}

func newRoot(d *fakeDisk, o Options) *Root {
	o.Logf = func(string, ...any) {}
	return NewRoot(d, o)
}

// part returns the partition file number n of r.
func part(t *testing.T, r *Root, n int) *partFile {
	t.Helper()
	for _, p := range r.parts {
		if p.num == n {
			return p
		}
	}
	t.Fatalf("no p%d", n)
	return nil
}

func TestPartitionTable(t *testing.T) {
	r := newRoot(mbrDisk(), Options{})
	var got []string
	for _, p := range r.parts {
		got = append(got, partName(p.num))
		if p.start%512 != 0 {
			t.Errorf("p%d starts at %d", p.num, p.start)
		}
	}
	// The extended container (3) is left out; the logical partition is p5.
	if strings.Join(got, " ") != "p1 p2 p5" {
		t.Fatalf("partition files %v, want p1 p2 p5", got)
	}
	for _, c := range []struct {
		n           int
		start, size int64
	}{{1, 64 * 512, 512 * 512}, {2, 576 * 512, 256 * 512}, {5, 1088 * 512, 128 * 512}} {
		if p := part(t, r, c.n); p.start != c.start || p.size != c.size {
			t.Errorf("p%d: start %d size %d, want %d %d", c.n, p.start, p.size, c.start, c.size)
		}
	}
	if len(r.partLog) != 0 {
		t.Errorf("log for a good table: %+v", r.partLog)
	}
	if r := newRoot(mbrDisk(), Options{NoPartitions: true}); len(r.parts) != 0 || len(r.partLog) != 0 {
		t.Errorf("NoPartitions: %d files, log %+v", len(r.parts), r.partLog)
	}
	// A partition running past the end of the disk is clipped to it, and
	// that is reported (through Logf).
	d := mbrDisk()
	putEntry(d.b[:512], 1, 0x07, 576, 4000)
	r = newRoot(d, Options{})
	if p := part(t, r, 2); p.size != (2048-576)*512 || len(r.partLog) != 1 || r.partLog[0].note || !strings.Contains(r.partLog[0].msg, "clipped") {
		t.Errorf("clipped p2: size %d, log %+v", p.size, r.partLog)
	}
}

// TestPartitionTableUnusable: no table, or one that does not parse, gives
// no partition files and one line to log, and disk.raw as always.
func TestPartitionTableUnusable(t *testing.T) {
	loop := mbrDisk()
	// The EBR links to itself: the chain loops.
	putEntry(loop.b[1024*512:1025*512], 1, 0x05, 0, 1024)
	ebrLoop := loop
	gpt := &fakeDisk{b: make([]byte, 1<<20)}
	putEntry(gpt.b[:512], 0, 0xEE, 1, 2047) // protective MBR, no GPT header
	for name, c := range map[string]struct {
		d    *fakeDisk
		want string
		note bool // a note (Notef), not an error (Logf)
	}{
		"no table":    {&fakeDisk{b: make([]byte, 1<<20)}, "no partition table", true},
		"tiny disk":   {&fakeDisk{b: make([]byte, 100)}, "no partition table", true},
		"EBR loop":    {ebrLoop, "partition table not used, no partition files: partition: mbr: the EBR chain loops", false},
		"GPT damaged": {gpt, "partition table not used, no partition files: partition: gpt", false},
	} {
		r := newRoot(c.d, Options{})
		if len(r.parts) != 0 || len(r.partLog) != 1 || !strings.Contains(r.partLog[0].msg, c.want) || r.partLog[0].note != c.note {
			t.Errorf("%s: %d files, log %+v; want none and %q (note %v)", name, len(r.parts), r.partLog, c.want, c.note)
		}
		if r.file == nil || r.file.d != c.d {
			t.Errorf("%s: no disk.raw", name)
		}
	}
}

func TestPartitionReadWrite(t *testing.T) {
	ctx := context.Background()
	d := mbrDisk()
	r := newRoot(d, Options{})
	p := part(t, r, 2) // bytes [576*512, 832*512)
	start, size := int64(576*512), int64(256*512)
	read := func(off int64, n int) []byte {
		t.Helper()
		res, errno := p.Read(ctx, nil, make([]byte, n), off)
		if errno != 0 {
			t.Fatalf("read %d at %d: %v", n, off, errno)
		}
		b, _ := res.Bytes(make([]byte, n))
		return b
	}
	if got := read(1000, 3000); !bytes.Equal(got, d.b[start+1000:start+4000]) {
		t.Error("read inside p2 is not the disk.raw window")
	}
	if got := read(size-100, 4096); !bytes.Equal(got, d.b[start+size-100:start+size]) {
		t.Errorf("read across p2's end: %d bytes, want the 100 before the end", len(got))
	}
	if got := read(size, 512); len(got) != 0 {
		t.Errorf("read at p2's end: %d bytes", len(got))
	}
	// Writes land in the window; across the end they are short; at or
	// past the end ENOSPC; the next partition is never touched.
	next := bytes.Clone(d.b[start+size:])
	if n, errno := p.Write(ctx, nil, []byte{1, 2, 3}, 10); n != 3 || errno != 0 || !bytes.Equal(d.b[start+10:start+13], []byte{1, 2, 3}) {
		t.Errorf("write in p2: %d, %v", n, errno)
	}
	if n, errno := p.Write(ctx, nil, []byte{7, 8, 9}, size-2); n != 2 || errno != 0 || d.b[start+size-2] != 7 || d.b[start+size-1] != 8 {
		t.Errorf("write across p2's end: %d, %v; want 2 bytes written", n, errno)
	}
	for _, off := range []int64{size, size + 1, 1 << 40} {
		if n, errno := p.Write(ctx, nil, []byte{1}, off); n != 0 || errno != syscall.ENOSPC {
			t.Errorf("write at %d (p2 is %d bytes): %d, %v; want ENOSPC", off, size, n, errno)
		}
	}
	if !bytes.Equal(d.b[start+size:], next) {
		t.Error("writes through p2 changed bytes past its end")
	}
	if errno := p.Fsync(ctx, nil, 0); errno != 0 || d.synced != 1 {
		t.Errorf("fsync: %v, synced %d", errno, d.synced)
	}
	d.err = syscall.EDQUOT
	if _, errno := p.Write(ctx, nil, []byte{1}, 0); errno != syscall.EDQUOT {
		t.Errorf("write with the disk failing: %v", errno)
	}
}

func TestPartitionReadOnly(t *testing.T) {
	ctx := context.Background()
	for _, o := range []struct {
		name string
		d    *fakeDisk
		opt  Options
	}{{"--ro", mbrDisk(), Options{ReadOnly: true}}, {"read-only disk", func() *fakeDisk { d := mbrDisk(); d.ro = true; return d }(), Options{}}} {
		p := part(t, newRoot(o.d, o.opt), 1)
		if _, _, errno := p.Open(ctx, syscall.O_RDWR); errno != syscall.EROFS {
			t.Errorf("%s: open rw: %v", o.name, errno)
		}
		if _, _, errno := p.Open(ctx, syscall.O_RDONLY); errno != 0 {
			t.Errorf("%s: open ro: %v", o.name, errno)
		}
		before := bytes.Clone(o.d.b)
		if _, errno := p.Write(ctx, nil, []byte{1}, 0); errno != syscall.EROFS || !bytes.Equal(before, o.d.b) {
			t.Errorf("%s: write: %v", o.name, errno)
		}
		var out fuse.AttrOut
		p.Getattr(ctx, nil, &out)
		if out.Mode != syscall.S_IFREG|0o444 {
			t.Errorf("%s: mode %o", o.name, out.Mode)
		}
	}
}

func TestPartitionAttr(t *testing.T) {
	ctx := context.Background()
	d := mbrDisk()
	// Data from the middle of p1 to the middle of p2.
	d.dataStart, d.dataEnd = 300*512, 700*512
	r := newRoot(d, Options{})
	var out fuse.AttrOut
	for _, c := range []struct {
		n      int
		blocks uint64 // 512-byte blocks of data in the window
	}{{1, 576 - 300}, {2, 700 - 576}, {5, 0}} {
		p := part(t, r, c.n)
		if errno := p.Getattr(ctx, nil, &out); errno != 0 || out.Size != uint64(p.size) || out.Blocks != c.blocks || out.Mode != syscall.S_IFREG|0o644 {
			t.Errorf("p%d: %v size %d blocks %d mode %o; want size %d blocks %d", c.n, errno, out.Size, out.Blocks, out.Mode, p.size, c.blocks)
		}
	}
	// A repeated stat with the disk's allocation unchanged walks nothing;
	// a change in allocation is seen at the next stat.
	p := part(t, r, 2)
	d.chainCalls = 0
	p.Getattr(ctx, nil, &out)
	if d.chainCalls != 0 {
		t.Errorf("second stat: %d Extent calls", d.chainCalls)
	}
	d.dataEnd = 800 * 512
	p.Getattr(ctx, nil, &out)
	if out.Blocks != 800-576 {
		t.Errorf("after allocation: blocks %d, want %d", out.Blocks, 800-576)
	}
	// Setattr: the partition's size is accepted, any other refused.
	in := &fuse.SetAttrIn{}
	in.Valid, in.Size = fuse.FATTR_SIZE, uint64(p.size)
	if errno := p.Setattr(ctx, nil, in, &out); errno != 0 || out.Size != uint64(p.size) {
		t.Errorf("setattr to its own size: %v, size %d", errno, out.Size)
	}
	for _, sz := range []uint64{0, uint64(p.size) + 512, uint64(len(d.b))} {
		in.Size = sz
		if errno := p.Setattr(ctx, nil, in, &out); errno != syscall.EPERM {
			t.Errorf("truncate p2 to %d: %v, want EPERM", sz, errno)
		}
	}
}

// TestPartitionBlocksEstimate: past maxExtentCalls the rest of the window
// is estimated at the disk's allocation ratio.
func TestPartitionBlocksEstimate(t *testing.T) {
	ctx := context.Background()
	d := mbrDisk()
	// 512-byte runs alternating data and hole: p1 has 512 of them, more
	// than the walk may make when maxExtentCalls is small.
	d.extent = func(off int64) (bool, int64) { return off/512%2 == 0, off/512*512 + 512 }
	d.dataStart, d.dataEnd = 0, int64(len(d.b))/2 // AllocatedBytes: half the disk
	r := newRoot(d, Options{})
	var out fuse.AttrOut
	p := part(t, r, 1)
	p.Getattr(ctx, nil, &out)
	if out.Blocks != 256 {
		t.Errorf("p1 walked whole: %d blocks, want 256", out.Blocks)
	}
	// With 100 calls: 50 data runs walked (sectors 64 to 163), and the
	// other 412 sectors of p1 at the disk's ratio, now a quarter.
	defer func(n int) { maxExtentCalls = n }(maxExtentCalls)
	maxExtentCalls = 100
	d.dataEnd = int64(len(d.b)) / 4
	p.Getattr(ctx, nil, &out)
	if want := uint64(50 + 412/4); out.Blocks != want {
		t.Errorf("p1 estimated: %d blocks, want %d", out.Blocks, want)
	}
}

func TestPartitionLseek(t *testing.T) {
	ctx := context.Background()
	d := mbrDisk()
	d.dataStart, d.dataEnd = 300*512, 700*512 // from inside p1 into p2
	r := newRoot(d, Options{})
	p1, p2, p5 := part(t, r, 1), part(t, r, 2), part(t, r, 5)
	const seekData, seekHole = 3, 4
	for _, c := range []struct {
		p      *partFile
		off    uint64
		whence uint32
		want   uint64
		errno  syscall.Errno
	}{
		{p1, 0, seekData, (300 - 64) * 512, 0},
		{p1, 0, seekHole, 0, 0},
		{p1, (300 - 64) * 512, seekHole, 512 * 512, 0}, // data to p1's end: the end is a hole
		{p1, 512 * 512, seekData, 0, syscall.ENXIO},
		{p2, 0, seekData, 0, 0},
		{p2, 0, seekHole, (700 - 576) * 512, 0},
		{p2, (700 - 576) * 512, seekData, 0, syscall.ENXIO}, // the data after is past p2
		{p5, 0, seekData, 0, syscall.ENXIO},
		{p5, 0, seekHole, 0, 0},
		{p2, 0, 0, 0, syscall.EINVAL},
	} {
		got, errno := c.p.Lseek(ctx, nil, c.off, c.whence)
		if got != c.want || errno != c.errno {
			t.Errorf("p%d lseek(%d, %d) = %d, %v; want %d, %v", c.p.num, c.off, c.whence, got, errno, c.want, c.errno)
		}
	}
}
