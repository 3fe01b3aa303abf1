package vhdx_test

import (
	"errors"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// rwFile is a sparse in-memory layer.File of 4 KiB pages that can record
// every write, truncate and sync, so that a test can rebuild the file as it
// was after any prefix of them (a crash at that instant).
type rwFile struct {
	mu      sync.Mutex
	size    int64
	pages   map[int64][]byte
	record  bool
	ops     []fileOp
	tag     int // stamped on each recorded op (the test's write number)
	syncs   int
	punched int64
}

type fileOp struct {
	kind byte // 'w' write, 't' truncate, 's' sync
	off  int64
	data []byte
	tag  int
}

func newRWFile(b []byte) *rwFile {
	f := &rwFile{pages: map[int64][]byte{}}
	f.apply(fileOp{kind: 'w', data: b})
	return f
}

func (f *rwFile) clone() *rwFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := &rwFile{size: f.size, pages: make(map[int64][]byte, len(f.pages))}
	for k, p := range f.pages {
		g.pages[k] = append([]byte(nil), p...)
	}
	return g
}

func (f *rwFile) apply(o fileOp) {
	switch o.kind {
	case 'w':
		for i := 0; i < len(o.data); {
			pos := o.off + int64(i)
			pg := pos / 4096
			p := f.pages[pg]
			if p == nil {
				p = make([]byte, 4096)
				f.pages[pg] = p
			}
			i += copy(p[pos%4096:], o.data[i:])
		}
		f.size = max(f.size, o.off+int64(len(o.data)))
	case 't':
		if o.off < f.size {
			for pg := range f.pages {
				if pg*4096 >= o.off {
					delete(f.pages, pg)
				}
			}
			if p := f.pages[o.off/4096]; p != nil {
				clear(p[o.off%4096:])
			}
		}
		f.size = o.off
	case 'p': // punch: [off, off+len(data)) reads zeros, pages wholly in it are freed
		end := o.off + int64(len(o.data))
		for pos := o.off; pos < end; {
			pg := pos / 4096
			k := min(end, (pg+1)*4096) - pos
			if k == 4096 {
				delete(f.pages, pg)
			} else if p := f.pages[pg]; p != nil {
				clear(p[pos%4096 : pos%4096+k])
			}
			pos += k
		}
	}
}

// PunchHole deallocates [off, off+n), keeping the size (vhdx.Puncher).
// punched counts the bytes.
func (f *rwFile) PunchHole(off, n int64) error {
	if off < 0 || n < 0 {
		return errors.New("negative punch")
	}
	o := fileOp{kind: 'p', off: off, data: make([]byte, n)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apply(o)
	f.punched += n
	if f.record {
		o.tag = f.tag
		f.ops = append(f.ops, o)
	}
	return nil
}

func (f *rwFile) ReadAt(b []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return readPages(f.pages, f.size, b, off)
}

func (f *rwFile) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	o := fileOp{kind: 'w', off: off, data: append([]byte(nil), b...)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apply(o)
	if f.record {
		o.tag = f.tag
		f.ops = append(f.ops, o)
	}
	return len(b), nil
}

func (f *rwFile) Truncate(n int64) error {
	o := fileOp{kind: 't', off: n}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apply(o)
	if f.record {
		o.tag = f.tag
		f.ops = append(f.ops, o)
	}
	return nil
}

func (f *rwFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if f.record {
		f.ops = append(f.ops, fileOp{kind: 's', tag: f.tag})
	}
	return nil
}

func (f *rwFile) Stat() (os.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return memInfo{f.size}, nil
}

func (f *rwFile) Close() error { return nil }

// bytesAt returns the file's bytes [off, off+n).
func (f *rwFile) bytesAt(off, n int64) []byte {
	b := make([]byte, n)
	f.ReadAt(b, off)
	return b
}

// readerFunc adapts a function to io.ReaderAt.
type readerFunc func(p []byte, off int64) (int, error)

func (r readerFunc) ReadAt(p []byte, off int64) (int, error) { return r(p, off) }

// modelBelow reads the builder's model of a chain (zeros when empty): what
// lies below a writable layer, computed independently of this package.
func modelBelow(chain []*tLayer) io.ReaderAt {
	return readerFunc(func(p []byte, off int64) (int, error) {
		if len(chain) == 0 {
			clear(p)
			return len(p), nil
		}
		copy(p, expect(chain, off, int64(len(p))))
		return len(p), nil
	})
}

// readLayer reads [off, off+n) of l, the runs that fall through from below.
func readLayer(t testing.TB, l *vhdx.Layer, below io.ReaderAt, off, n int64) []byte {
	t.Helper()
	out := make([]byte, n)
	runs, err := l.Map(nil, off, n)
	if err != nil {
		t.Fatalf("Map %d+%d: %v", off, n, err)
	}
	pos := int64(0)
	for _, r := range runs {
		dst := out[pos : pos+r.Len]
		switch r.State {
		case layer.Data:
			if err := l.ReadData(dst, r.FileOff); err != nil {
				t.Fatalf("ReadData: %v", err)
			}
		case layer.Parent:
			if below != nil {
				if _, err := below.ReadAt(dst, off+pos); err != nil {
					t.Fatalf("below: %v", err)
				}
			}
		}
		pos += r.Len
	}
	if pos != n {
		t.Fatalf("Map %d+%d: runs add up to %d", off, n, pos)
	}
	return out
}

// vmodel is the model of a disk being written: the builder's model of the
// chain, with the pages the test wrote kept here.
type vmodel struct {
	chain []*tLayer
	pages map[int64][]byte // 4 KiB pages of the virtual disk
}

func newModel(chain []*tLayer) *vmodel { return &vmodel{chain: chain, pages: map[int64][]byte{}} }

func (m *vmodel) clone() *vmodel {
	c := newModel(m.chain)
	for k, p := range m.pages {
		c.pages[k] = append([]byte(nil), p...)
	}
	return c
}

func (m *vmodel) write(p []byte, off int64) {
	for i := 0; i < len(p); {
		pos := off + int64(i)
		pg := pos / 4096
		b := m.pages[pg]
		if b == nil {
			b = expect(m.chain, pg*4096, 4096)
			m.pages[pg] = b
		}
		i += copy(b[pos%4096:], p[i:])
	}
}

func (m *vmodel) read(off, n int64) []byte {
	out := expect(m.chain, off, n)
	for pg := off / 4096; pg*4096 < off+n; pg++ {
		b := m.pages[pg]
		if b == nil {
			continue
		}
		lo, hi := max(pg*4096, off), min(pg*4096+4096, off+n)
		copy(out[lo-off:hi-off], b[lo-pg*4096:hi-pg*4096])
	}
	return out
}
