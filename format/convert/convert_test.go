package convert

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format"
)

// memSource is a model disk in memory; holes are the ranges listed.
type memSource struct {
	b      []byte
	holes  [][2]int64
	reads  atomic.Int64
	onRead func(off int64) error
}

func (m *memSource) Size() int64 { return int64(len(m.b)) }

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	m.reads.Add(1)
	if m.onRead != nil {
		if err := m.onRead(off); err != nil {
			return 0, err
		}
	}
	return copy(p, m.b[off:]), nil
}

func (m *memSource) Extent(off int64) (bool, int64) {
	for _, h := range m.holes {
		if off >= h[0] && off < h[1] {
			return false, h[1]
		}
		if off < h[0] {
			return true, h[0]
		}
	}
	return true, m.Size()
}

// model returns a 9 MiB disk: random data, a zero run that is data, and a
// hole, with the boundaries off the 2 MiB chunks.
func model() *memSource {
	rng := rand.New(rand.NewPCG(7, 7))
	b := make([]byte, 9<<20)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	clear(b[3<<20+512 : 5<<20])  // zeros the source stores
	clear(b[6<<20 : 8<<20+4096]) // a hole
	return &memSource{b: b, holes: [][2]int64{{6 << 20, 8<<20 + 4096}}}
}

func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

// TestConvertOutputs: every output format holds the model's bytes, read
// back from the raw file directly and through format for the VHDs; progress
// adds up to the size.
func TestConvertOutputs(t *testing.T) {
	src := model()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		out  Output
		bs   int64
	}{{"raw", Raw, 0}, {"fixed", Fixed, 0}, {"dynamic", Dynamic, 0}, {"dynamic-512k", Dynamic, 512 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			dst := filepath.Join(dir, c.name)
			var done atomic.Int64
			if err := Convert(context.Background(), src, dst, Options{Output: c.out, BlockSize: c.bs, Progress: func(n int64) { done.Add(n) }}); err != nil {
				t.Fatal(err)
			}
			if done.Load() != src.Size() {
				t.Errorf("progress %d, want %d", done.Load(), src.Size())
			}
			var got []byte
			if c.out == Raw {
				got, _ = os.ReadFile(dst)
			} else {
				d, err := format.Open(dst, &format.Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				got = make([]byte, d.Size())
				d.ReadAt(got, 0)
				d.Close()
			}
			if !bytes.Equal(got, src.b) {
				t.Error("output differs from the model")
			}
		})
	}
	onlyFiles(t, dir, "dynamic", "dynamic-512k", "fixed", "raw")
}

// TestConvertCancel: cancelling during the copy returns the context's error
// and removes the temporary file; an existing DST stays.
func TestConvertCancel(t *testing.T) {
	for _, out := range []Output{Raw, Dynamic} {
		dir := t.TempDir()
		dst := filepath.Join(dir, "dst")
		os.WriteFile(dst, []byte("old"), 0o644)
		ctx, cancel := context.WithCancel(context.Background())
		src := model()
		src.onRead = func(int64) error { cancel(); return nil }
		err := Convert(ctx, src, dst, Options{Output: out, Replace: true})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("output %d: err %v, want context.Canceled", out, err)
		}
		if b, _ := os.ReadFile(dst); string(b) != "old" {
			t.Errorf("output %d: DST changed", out)
		}
		onlyFiles(t, dir, "dst")
	}
}

// TestConvertErrors: a read error is the source's, unprefixed; an error on
// the output names DST, never the temporary file; a block size with a
// non-dynamic output is refused.
func TestConvertErrors(t *testing.T) {
	dir := t.TempDir()
	src := model()
	boom := errors.New("vhd: /src.vhd: BAT entry 1 at 0x600: corrupt image")
	src.onRead = func(off int64) error {
		if off >= 2<<20 {
			return boom
		}
		return nil
	}
	dst := filepath.Join(dir, "dst.vhd")
	err := Convert(context.Background(), src, dst, Options{Output: Dynamic})
	if !errors.Is(err, boom) || err.Error() != boom.Error() {
		t.Errorf("read error %q, want %q", err, boom)
	}
	onlyFiles(t, dir)
	src.onRead = nil
	missing := filepath.Join(dir, "no", "dst.raw")
	for _, out := range []Output{Raw, Fixed} {
		err = Convert(context.Background(), src, missing, Options{Output: out})
		if err == nil || err.Error() != missing+": no such file or directory" {
			t.Errorf("output %d into a missing dir: %q", out, err)
		}
	}
	if err := Convert(context.Background(), src, dst, Options{Output: Fixed, BlockSize: 1 << 20}); err == nil {
		t.Error("block size with a fixed output accepted")
	}
}

// TestConvertShortRead: a source that returns fewer bytes than asked (a
// file that shrank during the copy) fails the conversion with that reason;
// it never writes what the buffer held before.
func TestConvertShortRead(t *testing.T) {
	dir := t.TempDir()
	for _, out := range []Output{Raw, Fixed, Dynamic, VHDX} {
		src := &shortSource{memSource: model(), at: 5 << 20}
		dst := filepath.Join(dir, "dst")
		err := Convert(context.Background(), src, dst, Options{Output: out, Replace: true})
		if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("output %d: err %v, want a short read", out, err)
		}
		onlyFiles(t, dir)
	}
	// A raw file cut short while open: its name and the reason.
	p := filepath.Join(dir, "raw")
	if err := os.WriteFile(p, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _, closeSrc, err := OpenSource(p, InputRaw, "")
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	if err := os.Truncate(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2<<20)
	if _, err := s.ReadAt(b, 0); err == nil || !strings.Contains(err.Error(), p+": ends at 1048576 bytes") {
		t.Errorf("read of a shrunk raw file: %v", err)
	}
}

// shortSource returns short reads (io.EOF) from offset at on.
type shortSource struct {
	*memSource
	at int64
}

func (s *shortSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.at {
		n := max(0, int(s.at-off))
		copy(p[:n], s.b[off:])
		return n, io.EOF
	}
	return s.memSource.ReadAt(p, off)
}

// TestRawSource: a raw file that is not a whole number of sectors reads
// padded with zeros; its holes are reported; a FIFO is refused at once.
func TestRawSource(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "odd")
	f, _ := os.Create(p)
	f.WriteAt([]byte("end"), 4<<20+700)
	f.Close()
	s, info, closeSrc, err := OpenSource(p, InputRaw, "")
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	if s.Size() != 4<<20+1024 || info.RawSize != 4<<20+703 || info.Format != InputRaw || info.Guessed {
		t.Errorf("size %d, info %+v", s.Size(), info)
	}
	b := make([]byte, 1024)
	if n, err := s.ReadAt(b, 4<<20); n != 1024 || err != nil || string(b[700:703]) != "end" || b[703] != 0 {
		t.Errorf("tail read %d, %v", n, err)
	}
	if data, end := s.Extent(0); data || end != 4<<20 {
		t.Errorf("Extent(0) = %v, %d; want a hole to 4 MiB (tmpfs/ext4 page granularity)", data, end)
	}
	if _, info, c, err := OpenSource(p, InputDetect, ""); err != nil || !info.Guessed {
		t.Errorf("detect: %+v, %v", info, err)
	} else {
		c()
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{InputDetect, InputVHD, InputRaw} {
		if _, _, _, err := OpenSource(fifo, in, ""); err == nil || !strings.Contains(err.Error(), fifo+": is a FIFO") {
			t.Errorf("FIFO as %q: %v", in, err)
		}
	}
}
