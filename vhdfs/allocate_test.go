package vhdfs

import (
	"bytes"
	"context"
	"syscall"
	"testing"
)

// discardDisk is a fakeDisk that records discards and zeros their range.
type discardDisk struct {
	*fakeDisk
	calls [][2]int64
}

func (d *discardDisk) Discard(off, n int64) error {
	d.calls = append(d.calls, [2]int64{off, n})
	clear(d.b[off : off+n])
	return nil
}

// TestAllocate: punch-hole and zero-range modes discard (clipped to the disk
// with KEEP_SIZE); modes that would allocate or grow the file are refused.
func TestAllocate(t *testing.T) {
	const size = 8192
	for _, c := range []struct {
		name      string
		off, n    uint64
		mode      uint32
		want      syscall.Errno
		discarded [2]int64 // zero when nothing is discarded
	}{
		{"punch", 512, 1024, fallocPunchHole | fallocKeepSize, 0, [2]int64{512, 1024}},
		{"punch past the end", 4096, 8192, fallocPunchHole | fallocKeepSize, 0, [2]int64{4096, 4096}},
		{"punch at the end", size, 512, fallocPunchHole | fallocKeepSize, 0, [2]int64{}},
		{"zero range", 100, 1000, fallocZeroRange, 0, [2]int64{100, 1000}},
		{"zero range keep size", 0, 8192, fallocZeroRange | fallocKeepSize, 0, [2]int64{0, 8192}},
		{"zero range growing", 4096, 8192, fallocZeroRange, syscall.EPERM, [2]int64{}},
		{"punch without keep size", 0, 512, fallocPunchHole, syscall.EOPNOTSUPP, [2]int64{}},
		{"preallocate", 0, 512, 0, syscall.EOPNOTSUPP, [2]int64{}},
		{"keep size only", 0, 512, fallocKeepSize, syscall.EOPNOTSUPP, [2]int64{}},
		{"collapse range", 0, 4096, 0x08, syscall.EOPNOTSUPP, [2]int64{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &discardDisk{fakeDisk: &fakeDisk{b: make([]byte, size), dataEnd: size}}
			for i := range d.b {
				d.b[i] = 0xAA
			}
			f := newFile(d.fakeDisk)
			f.d = d
			if got := f.Allocate(context.Background(), nil, c.off, c.n, c.mode); got != c.want {
				t.Fatalf("Allocate(%d, %d, 0x%x) = %v, want %v", c.off, c.n, c.mode, got, c.want)
			}
			var want [][2]int64
			if c.discarded != ([2]int64{}) {
				want = append(want, c.discarded)
			}
			if len(d.calls) != len(want) || (len(want) == 1 && d.calls[0] != want[0]) {
				t.Errorf("discards %v, want %v", d.calls, want)
			}
		})
	}
	ro := &discardDisk{fakeDisk: &fakeDisk{b: make([]byte, size), ro: true}}
	f := newFile(ro.fakeDisk)
	f.d = ro
	if got := f.Allocate(context.Background(), nil, 0, 512, fallocPunchHole|fallocKeepSize); got != syscall.EROFS {
		t.Errorf("read-only disk: %v, want EROFS", got)
	}
}

// TestPartitionAllocate: fallocate on a partition file discards within the
// partition only, moved by its start, with disk.raw's modes and errors and
// the partition's end for the disk's; nothing outside it changes.
func TestPartitionAllocate(t *testing.T) {
	const p2start, p2size = 576 * 512, 256 * 512 // p2 of mbrDisk
	for _, c := range []struct {
		name      string
		off, n    uint64
		mode      uint32
		want      syscall.Errno
		discarded [2]int64 // on the disk; zero when nothing is discarded
	}{
		{"punch", 512, 1024, fallocPunchHole | fallocKeepSize, 0, [2]int64{p2start + 512, 1024}},
		{"punch past the end", 4096, 1 << 20, fallocPunchHole | fallocKeepSize, 0, [2]int64{p2start + 4096, p2size - 4096}},
		{"punch at the end", p2size, 512, fallocPunchHole | fallocKeepSize, 0, [2]int64{}},
		{"zero range", 100, 1000, fallocZeroRange, 0, [2]int64{p2start + 100, 1000}},
		{"zero range whole", 0, p2size, fallocZeroRange, 0, [2]int64{p2start, p2size}},
		{"zero range growing", 4096, p2size, fallocZeroRange, syscall.EPERM, [2]int64{}},
		{"punch without keep size", 0, 512, fallocPunchHole, syscall.EOPNOTSUPP, [2]int64{}},
		{"preallocate", 0, 512, 0, syscall.EOPNOTSUPP, [2]int64{}},
		{"overflow", 1, 1<<64 - 1, fallocPunchHole | fallocKeepSize, syscall.EFBIG, [2]int64{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd := mbrDisk()
			orig := bytes.Clone(fd.b)
			d := &discardDisk{fakeDisk: fd}
			r := NewRoot(d, Options{Logf: func(string, ...any) {}})
			if got := part(t, r, 2).Allocate(context.Background(), nil, c.off, c.n, c.mode); got != c.want {
				t.Fatalf("Allocate(%d, %d, 0x%x) = %v, want %v", c.off, c.n, c.mode, got, c.want)
			}
			var want [][2]int64
			if c.discarded != ([2]int64{}) {
				want = append(want, c.discarded)
			}
			if len(d.calls) != len(want) || (len(want) == 1 && d.calls[0] != want[0]) {
				t.Fatalf("discards %v, want %v", d.calls, want)
			}
			// The model: the original bytes with the discarded range zeroed.
			model := bytes.Clone(orig)
			if len(want) == 1 {
				clear(model[want[0][0] : want[0][0]+want[0][1]])
			}
			if !bytes.Equal(fd.b, model) {
				t.Errorf("disk bytes differ from the model")
			}
		})
	}
	ro := mbrDisk()
	ro.ro = true
	r := NewRoot(&discardDisk{fakeDisk: ro}, Options{Logf: func(string, ...any) {}})
	if got := part(t, r, 1).Allocate(context.Background(), nil, 0, 512, fallocPunchHole|fallocKeepSize); got != syscall.EROFS {
		t.Errorf("read-only disk: %v, want EROFS", got)
	}
	// A disk that cannot discard: EOPNOTSUPP, as on disk.raw.
	r = NewRoot(mbrDisk(), Options{Logf: func(string, ...any) {}})
	if got := part(t, r, 1).Allocate(context.Background(), nil, 0, 512, fallocPunchHole|fallocKeepSize); got != syscall.EOPNOTSUPP {
		t.Errorf("disk without Discard: %v, want EOPNOTSUPP", got)
	}
}
