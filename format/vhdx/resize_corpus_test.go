package vhdx_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// peerReadsAs reads the image at path through a peer and fails unless its
// first size bytes hash to sum (the corpus's hash) and the extra bytes after
// them are zeros.
func peerReadsAs(t *testing.T, who string, ps peerStream, path string, size, extra int64, sum string) {
	t.Helper()
	r := ps(t, path)
	defer r.Close()
	h := sha256.New()
	if n, err := io.CopyN(h, r, size); err != nil {
		t.Fatalf("%s: read %d of %d bytes: %v", who, n, size, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		t.Fatalf("%s reads the first %d bytes as %s; the corpus says %s", who, size, got, sum)
	}
	buf := make([]byte, 1<<20)
	for left := extra; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			t.Fatalf("%s: reading the grown tail: %v", who, err)
		}
		if !bytes.Equal(buf[:n], make([]byte, n)) {
			t.Fatalf("%s: the grown tail is not zeros", who)
		}
		left -= n
	}
	if n, _ := io.Copy(io.Discard, r); n != 0 {
		t.Fatalf("%s: %d bytes past the %d-byte disk", who, n, size+extra)
	}
}

// TestResizeCorpus: real files (Windows' fixed and dynamic, one qemu-img
// made) grown by 40 MiB + 1 KiB through the layer, then shrunk back: each
// time they check clean in qemu-img, and qemu-img and 7-Zip read their first
// bytes as the corpus's hash says and the grown tail as zeros.
func TestResizeCorpus(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	cases := map[string]testenv.Case{}
	for _, c := range testenv.Cases(t, corpus) {
		cases[c.Name] = c
	}
	const extra = 40<<20 + 1024
	for _, name := range []string{"dissect-hypervisor/fixed", "dissect-hypervisor/dynamic", "vhdx-qemu/dyn-256M"} {
		t.Run(name, func(t *testing.T) {
			c, ok := cases[name]
			if !ok {
				t.Fatalf("no case %s in cases.json", name)
			}
			src := testenv.Unpack(t, corpus, c.Open)
			path := filepath.Join(copyTree(t, filepath.Dir(src)), filepath.Base(src))
			resize := func(size int64, shrink bool) {
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				l, err := vhdx.Open(path, f, vhdx.Options{})
				if err != nil {
					f.Close()
					t.Fatal(err)
				}
				if _, err := l.Resize(size, shrink, 0); err != nil {
					t.Fatalf("Resize(%d): %v", size, err)
				}
				mustClean(t, l, "after the resize")
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}
			peers := map[string]peerStream{"qemu-img": qemuStream, "7zz": sevenZipStream}
			resize(c.Size+extra, false)
			qemuCheck(t, path)
			for who, ps := range peers {
				peerReadsAs(t, who, ps, path, c.Size, extra, c.SHA256)
			}
			resize(c.Size, true)
			qemuCheck(t, path)
			for who, ps := range peers {
				peerReadsAs(t, who, ps, path, c.Size, 0, c.SHA256)
			}
		})
	}
}
