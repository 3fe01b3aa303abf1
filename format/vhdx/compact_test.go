package vhdx_test

import (
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestCompactInterrupted stops the rewrite of a dynamic and a differencing
// file before each of its steps (as a failing writer or a crash would),
// and with a verification that refuses: every time the image is byte for
// byte as it was, still checks clean, and no temporary file is left. An
// image with two hard links is refused the same way, and a layer opened
// read-only is refused.
func TestCompactInterrupted(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	parent := filepath.Join(dir, "p.vhdx")
	if err := vhdx.Create(parent, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "c.vhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{parent, child} {
		l, f := openRW(t, path)
		for _, b := range []int64{0, 2, 3, 6} {
			p := make([]byte, 1<<20)
			if b != 3 {
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
			}
			if _, err := l.WriteAt(p[:700*512], b<<20+4096, zeroReader{}); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		f.Close()
	}
	sum := func(path string) [32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	noBelow := func(off, n int64) bool { return false }
	errStop := errors.New("stopped")
	for _, path := range []string{parent, child} {
		before := sum(path)
		try := func(what string, verify func(string) error, wantErr string) {
			t.Helper()
			l, f := openRW(t, path)
			_, err := l.Compact(noBelow, verify, nil)
			l.Close()
			f.Close()
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("%s: %s: err = %v, want %q", path, what, err, wantErr)
			}
			if sum(path) != before {
				t.Fatalf("%s: %s: the image changed", path, what)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), "compact") {
					t.Fatalf("%s: %s: temporary file %s left", path, what, e.Name())
				}
			}
			l, f = openRW(t, path)
			mustClean(t, l, what)
			l.Close()
			f.Close()
		}
		accept := func(string) error { return nil }
		for _, step := range []string{"header", "metadata", "blocks", "size", "sync", "verify", "mode", "rename"} {
			vhdx.SetCompactStep(func(s string) error {
				if s == step {
					return errStop
				}
				return nil
			})
			try("stopped before "+step, accept, "stopped")
		}
		vhdx.SetCompactStep(nil)
		seen := false
		try("verification refused", func(tmp string) error {
			fi, err := os.Stat(tmp)
			seen = err == nil && fi.Size() > 0
			return errors.New("refused")
		}, "refused")
		if !seen {
			t.Fatal("verify was not given the temporary file")
		}
		link := path + ".link"
		if err := os.Link(path, link); err != nil {
			t.Fatal(err)
		}
		try("two hard links", accept, "hard links")
		os.Remove(link)
	}
	f, err := os.Open(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ro, err := vhdx.Open(parent, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Compact(noBelow, func(string) error { return nil }, nil); !errors.Is(err, vhdx.ErrReadOnly) {
		t.Fatalf("read-only layer: err = %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}
