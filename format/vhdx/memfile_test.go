package vhdx_test

import (
	"compress/bzip2"
	"compress/gzip"
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
