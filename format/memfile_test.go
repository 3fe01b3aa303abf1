package format

import (
	"io"
	"io/fs"
	"os"
	"sync"
	"time"
)

// memFile is an in-memory File for tests.
type memFile struct {
	mu     sync.Mutex
	name   string
	b      []byte
	closed bool
	// fail, if set, is returned by ReadAt for reads touching [failOff, failOff+1).
	fail    error
	failOff int64
	// failFrom, if positive, fails (with fail) every read ending past it.
	failFrom int64
}

func newMemFile(name string, b []byte) *memFile { return &memFile{name: name, b: b} }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil && off <= m.failOff && m.failOff < off+int64(len(p)) {
		return 0, m.fail
	}
	if m.fail != nil && m.failFrom > 0 && off+int64(len(p)) > m.failFrom {
		return 0, m.fail
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

// PunchHole zeros [off, off+n) inside the file, keeping its size, as
// fallocate(PUNCH_HOLE|KEEP_SIZE) does.
func (m *memFile) PunchHole(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < int64(len(m.b)) {
		clear(m.b[off:min(off+n, int64(len(m.b)))])
	}
	return nil
}

// punchAsWrite is the write a punch of [off, off+n) amounts to in a file of
// size bytes: zeros over the part inside the file.
func punchAsWrite(off, n, size int64) []byte {
	if off >= size {
		return nil
	}
	return make([]byte, min(n, size-off))
}

func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

func (m *memFile) Sync() error  { return nil }
func (m *memFile) Close() error { m.closed = true; return nil }
func (m *memFile) Stat() (os.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return memInfo{m.name, int64(len(m.b))}, nil
}

func (m *memFile) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b...)
}

type memInfo struct {
	name string
	size int64
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// memFS maps absolute paths to memFiles, for Options.OpenFile.
type memFS map[string]*memFile

func (m memFS) open(path string, write bool) (File, error) {
	f, ok := m[path]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	// Each open gets its own view of the same bytes.
	return f, nil
}

func (m memFS) opts() *Options { return &Options{OpenFile: m.open} }
