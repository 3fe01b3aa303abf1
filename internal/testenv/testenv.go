// Package testenv holds what the tests of every package share: where the
// corpus is, unpacking its gzipped images into temporary directories, and the
// rule that a test which cannot run here skips locally but fails in CI.
package testenv

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// MustRun reports whether skips are forbidden: in CI (CI set) or when
// VHDMOUNT_NO_SKIP is set.
func MustRun() bool { return os.Getenv("CI") != "" || os.Getenv("VHDMOUNT_NO_SKIP") != "" }

// Require skips the test with reason when ok is false, or fails it when
// skips are forbidden (see MustRun).
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if MustRun() {
		t.Fatalf("cannot run, and skipping is not allowed here (CI): %s", reason)
	}
	t.Skip(reason)
}

// CorpusDir returns the shared corpus directory: $VHD_CORPUS, or
// shared/corpus beside the repository (found by walking up from the working
// directory). The test is skipped (failed in CI) when there is none.
func CorpusDir(t testing.TB) string {
	t.Helper()
	d := FindCorpus()
	Require(t, d != "", "corpus not found: set VHD_CORPUS or put shared/corpus beside the repository")
	return d
}

// FindCorpus returns $VHD_CORPUS, or shared/corpus beside the repository
// (found by walking up from the working directory), or "".
func FindCorpus() string {
	if d := os.Getenv("VHD_CORPUS"); d != "" {
		return d
	}
	dir, _ := os.Getwd()
	for {
		c := filepath.Join(dir, "..", "shared", "corpus")
		if _, err := os.Stat(filepath.Join(c, "cases.json")); err == nil {
			return filepath.Clean(c)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Case is one entry of the corpus's cases.json.
type Case struct {
	Name       string `json:"name"`
	Open       string `json:"open"`
	Note       string `json:"note"`
	Size       int64  `json:"size"`
	Type       string `json:"type"`
	Depth      int    `json:"depth"`
	SHA256     string `json:"sha256"`
	Error      string `json:"error"`
	Agrees7zip *bool  `json:"agrees_7zip"`
	// Format is "vhdx" for VHDX cases; empty (or "vhd") for VHD ones.
	Format string `json:"format"`
	// SHA256IfLogIgnored is the flat content a reader that skips a pending
	// VHDX log would return (set only for images with one).
	SHA256IfLogIgnored string `json:"sha256_if_log_ignored"`
}

// IsVHDX reports whether the case is a VHDX image.
func (c Case) IsVHDX() bool { return c.Format == "vhdx" }

// Cases reads cases.json.
func Cases(t testing.TB, corpus string) []Case {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpus, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Cases []Case `json:"cases"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("cases.json: %v", err)
	}
	if len(c.Cases) == 0 {
		t.Fatal("cases.json lists no cases")
	}
	return c.Cases
}

var (
	unpackMu   sync.Mutex
	unpackRoot string
	unpacked   = map[string]*unpackDir{}
)

type unpackDir struct {
	once sync.Once
	dir  string
	err  error
}

// Unpack returns a path to the corpus file rel (relative to the corpus dir)
// that can be opened: the whole directory it is in is copied into a temporary
// directory once per process, with every .gz file gunzipped (sparsely) next to
// its siblings, since parents are found by name beside the child. The
// returned path has no .gz or .bz2 suffix. Call Cleanup from TestMain.
func Unpack(t testing.TB, corpus, rel string) string {
	t.Helper()
	srcDir := filepath.Join(corpus, filepath.Dir(rel))
	unpackMu.Lock()
	if unpackRoot == "" {
		r, err := os.MkdirTemp("", "vhdmount-corpus-")
		if err != nil {
			unpackMu.Unlock()
			t.Fatal(err)
		}
		unpackRoot = r
	}
	u := unpacked[srcDir]
	if u == nil {
		u = &unpackDir{dir: filepath.Join(unpackRoot, strings.ReplaceAll(filepath.Dir(rel), "/", "_"))}
		unpacked[srcDir] = u
	}
	unpackMu.Unlock()
	u.once.Do(func() { u.err = copyDir(srcDir, u.dir) })
	if u.err != nil {
		t.Fatalf("unpacking %s: %v", srcDir, u.err)
	}
	return filepath.Join(u.dir, strings.TrimSuffix(strings.TrimSuffix(filepath.Base(rel), ".gz"), ".bz2"))
}

// Cleanup removes every directory Unpack made.
func Cleanup() {
	unpackMu.Lock()
	defer unpackMu.Unlock()
	if unpackRoot != "" {
		os.RemoveAll(unpackRoot)
		unpackRoot = ""
		unpacked = map[string]*unpackDir{}
	}
}

// Main runs the tests of a package and removes what Unpack made.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		name := e.Name()
		if strings.HasSuffix(name, ".expected.raw.gz") {
			continue // large; read on demand with OpenGz
		}
		plain := strings.TrimSuffix(strings.TrimSuffix(name, ".gz"), ".bz2")
		if plain != name {
			if _, err := os.Lstat(filepath.Join(src, plain)); err == nil {
				continue // the unpacked file is there too (qemu's samples ship both)
			}
		}
		if err := copyFile(filepath.Join(src, name), filepath.Join(dst, plain)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// copyFile copies src to dst sparsely, decompressing a .gz or .bz2 source.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	var r io.Reader = in
	switch {
	case strings.HasSuffix(src, ".gz"):
		zr, err := gzip.NewReader(in)
		if err != nil {
			return err
		}
		r = zr
	case strings.HasSuffix(src, ".bz2"):
		r = bzip2.NewReader(in)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := WriteSparse(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// WriteSparse copies r into f, leaving runs of 64 KiB of zeros as holes.
func WriteSparse(f *os.File, r io.Reader) error {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	zero := make([]byte, chunk)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return f.Truncate(off)
}

// OpenGz opens a corpus file for streaming, gunzipping it when it ends in .gz.
func OpenGz(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}
