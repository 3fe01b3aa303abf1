package vhdx_test

import (
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

var ioEOF = io.EOF

type memInfo struct{ size int64 }

func (i memInfo) Name() string       { return "mem" }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

func findCorpus() string { return testenv.FindCorpus() }

// A sparse file is encoded as its size (u64), then records: offset (u32),
// length (u16), bytes. Later records overwrite earlier ones; the rest reads
// as zeros. Sizes are capped at 256 MiB.
const maxSparse = 256 << 20

// encodeSparse encodes the non-zero bytes of b inside the keep ranges
// (everything when keep is nil), page by page.
func encodeSparse(b []byte, keep [][2]int64) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(b)))
	for p := 0; p < len(b); p += 4096 {
		in := keep == nil
		for _, k := range keep {
			in = in || int64(p) >= k[0] && int64(p) < k[1]
		}
		if !in || p > maxSparse {
			continue
		}
		pg := b[p:min(p+4096, len(b))]
		lo, hi := 0, len(pg)
		for lo < hi && pg[lo] == 0 {
			lo++
		}
		for hi > lo && pg[hi-1] == 0 {
			hi--
		}
		if lo == hi {
			continue
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(p+lo))
		out = binary.LittleEndian.AppendUint16(out, uint16(hi-lo))
		out = append(out, pg[lo:hi]...)
	}
	return out
}

// sparseFile is a read-only layer.File of 4 KiB pages.
type sparseFile struct {
	size  int64
	pages map[int64][]byte
}

func decodeSparse(data []byte) *sparseFile {
	f := &sparseFile{pages: map[int64][]byte{}}
	if len(data) < 8 {
		return f
	}
	f.size = int64(min(binary.LittleEndian.Uint64(data), maxSparse))
	data = data[8:]
	for len(data) >= 6 {
		off := int64(binary.LittleEndian.Uint32(data))
		n := int(binary.LittleEndian.Uint16(data[4:]))
		data = data[6:]
		n = min(n, len(data))
		for i := 0; i < n; {
			pg := (off + int64(i)) / 4096
			if pg*4096 >= maxSparse {
				break
			}
			p := f.pages[pg]
			if p == nil {
				p = make([]byte, 4096)
				f.pages[pg] = p
			}
			k := copy(p[(off+int64(i))%4096:], data[i:n])
			i += k
		}
		f.size = max(f.size, min(off+int64(n), maxSparse))
		data = data[n:]
	}
	return f
}

// fixCRC recomputes the CRC-32C at off+4 of the size bytes at off.
func (f *sparseFile) fixCRC(off, size int64) {
	b := make([]byte, size)
	if n, _ := f.ReadAt(b, off); int64(n) < size {
		return
	}
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b, tCRC))
	p := f.pages[(off+4)/4096]
	if p == nil {
		p = make([]byte, 4096)
		f.pages[(off+4)/4096] = p
	}
	copy(p[(off+4)%4096:], b[4:8])
}

func (f *sparseFile) ReadAt(b []byte, off int64) (int, error) {
	return readPages(f.pages, f.size, b, off)
}

// readPages reads a file of size bytes kept as 4 KiB pages (missing pages
// read zeros), as ReadAt does.
func readPages(pages map[int64][]byte, size int64, b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(b) && off+int64(n) < size {
		o := off + int64(n)
		k := min(int64(len(b)-n), 4096-o%4096, size-o)
		if p := pages[o/4096]; p != nil {
			copy(b[n:n+int(k)], p[o%4096:])
		} else {
			clear(b[n : n+int(k)])
		}
		n += int(k)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}
func (f *sparseFile) WriteAt(p []byte, off int64) (int, error) { return 0, errors.New("read-only") }
func (f *sparseFile) Stat() (os.FileInfo, error)               { return memInfo{f.size}, nil }
func (f *sparseFile) Truncate(int64) error                     { return errors.New("read-only") }
func (f *sparseFile) Sync() error                              { return nil }
func (f *sparseFile) Close() error                             { return nil }

// readMaybeCompressed reads a corpus file, gunzipping or bunzipping it; nil
// when it is larger than max.
func readMaybeCompressed(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".gz"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = zr
	case strings.HasSuffix(p, ".bz2"):
		r = bzip2.NewReader(f)
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil || int64(len(b)) > max {
		return nil, err
	}
	return b, nil
}
