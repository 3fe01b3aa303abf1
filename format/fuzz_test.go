package format

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// FuzzOpen opens arbitrary bytes as an image (and as the parent of a
// differencing child) and reads from it: it must never panic or hang.
func FuzzOpen(f *testing.F) {
	rng := rand.New(rand.NewPCG(21, 21))
	for _, chain := range testChains(rng) {
		for _, l := range chain {
			if img := l.image(); len(img) <= 1<<20 {
				f.Add(img)
			}
		}
	}
	// Small images of the corpus (real and generated, gzipped or not), found
	// wherever the repository is cloned (testenv: $VHD_CORPUS, or
	// shared/corpus beside the repository). Locally the fuzz test runs
	// without them; in CI their absence fails it.
	dir := testenv.FindCorpus()
	if dir == "" {
		testenv.Require(f, !testenv.MustRun(), "corpus not found: set VHD_CORPUS or put shared/corpus beside the repository")
	}
	for _, sub := range []string{"real", "generated"} {
		if dir == "" {
			break
		}
		filepath.Walk(filepath.Join(dir, sub), func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			if b := smallImage(p, fi.Size()); b != nil {
				f.Add(b)
			}
			return nil
		})
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := memFS{"/x/a.vhd": newMemFile("/x/a.vhd", data), "/x/p.vhd": newMemFile("/x/p.vhd", data)}
		d, err := Open("/x/a.vhd", fsys.opts())
		if err != nil {
			return
		}
		defer d.Close()
		d.Layers()
		buf := make([]byte, 64<<10)
		for _, off := range []int64{0, d.Size() / 2, d.Size() - 1, d.Size() - int64(len(buf))} {
			if off >= 0 {
				d.ReadAt(buf, off)
			}
		}
		for off, n := int64(0), 0; off < d.Size() && n < 1000; n++ {
			_, off = d.Extent(off)
		}
	})
}

// smallImage returns the bytes of the VHD at p (gunzipped for .vhd.gz) when
// they are at most 1 MiB, else nil.
func smallImage(p string, size int64) []byte {
	const limit = 1 << 20
	switch {
	case strings.HasSuffix(p, ".vhd") && size <= limit:
		b, _ := os.ReadFile(p)
		return b
	case strings.HasSuffix(p, ".vhd.gz") && size <= limit:
		r, err := testenv.OpenGz(p)
		if err != nil {
			return nil
		}
		defer r.Close()
		b, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil || len(b) > limit {
			return nil
		}
		return b
	}
	return nil
}

// fuzzWriteChains are the images FuzzWriteCrash writes into: a small
// dynamic disk and a differencing disk over one, both with some blocks
// allocated (full, empty and partial bitmaps) and a partial last block.
func fuzzWriteChains() [2][]*tLayer {
	rng := rand.New(rand.NewPCG(77, 77))
	const size = 512<<10 + 3*512
	return [2][]*tLayer{
		{randomLayer(rng, 3, size, 32<<10, 1)},
		{randomLayer(rng, 4, size, 64<<10, 2), randomLayer(rng, 3, size, 16<<10, 1)},
	}
}

// recFile records every WriteAt into the top image.
type recFile struct {
	*memFile
	log *[]fileWrite
}

type fileWrite struct {
	off int64
	p   []byte
}

func (r recFile) WriteAt(p []byte, off int64) (int, error) {
	*r.log = append(*r.log, fileWrite{off, append([]byte(nil), p...)})
	return r.memFile.WriteAt(p, off)
}

// PunchHole is recorded as the write of zeros it amounts to.
func (r recFile) PunchHole(off, n int64) error {
	st, _ := r.memFile.Stat()
	*r.log = append(*r.log, fileWrite{off, punchAsWrite(off, n, st.Size())})
	return r.memFile.PunchHole(off, n)
}

// FuzzWriteCrash applies writes decoded from the input to a dynamic or a
// differencing image, recording every write to the image file. Then, for
// every prefix of those file writes (a crash after k of them), the file as
// it would be on disk must open read-write, pass Check, and read, byte for
// byte, as the writes completed before the crash, with the bytes of the
// interrupted write either old or new.
func FuzzWriteCrash(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 0, 7})
	f.Add([]byte{1, 0, 0x10, 0x01, 0xFF, 0xFF, 3, 0, 0x7F, 0xFF, 0x10, 0x00, 0})
	f.Add([]byte{0, 0x07, 0xFF, 0x00, 0x04, 0x01, 9, 0x00, 0x00, 0x00, 0x00, 0x01, 0, 0x02, 0x34, 0x56, 0x80, 0x00, 5})
	f.Add([]byte{1, 0x07, 0xFF, 0xFE, 0x00, 0x10, 1, 0x03, 0x00, 0x00, 0x20, 0x00, 2, 0x03, 0x00, 0x01, 0x00, 0x02, 3})
	// Discards: whole blocks, a partial block, sub-sector, after writes.
	f.Add([]byte{0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x80, 0x00, 0xFF, 0x00, 0x10, 0x07, 0x00, 0x33, 0xFF})
	f.Add([]byte{1, 0x01, 0x00, 0x00, 0x40, 0x00, 9, 0x00, 0xFF, 0x00, 0xFF, 0xFF, 0xFF, 0x01, 0x02, 0x03, 0x00, 0x10, 0xFF})
	chains := fuzzWriteChains()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		chain := chains[data[0]%2]
		data = data[1:]
		base := chainFS(chain)
		initial := base["/img/layer0.vhd"].bytes()
		models := [][]byte{flat(chain)}
		size := int64(len(models[0]))

		// Decode up to 6 writes of 6 bytes each: offset (3 bytes), length
		// (2 bytes), fill (0: zeros, 0xFF: a discard, else a pattern from it).
		type op struct {
			off     int64
			p       []byte
			discard bool
		}
		var ops []op
		for len(data) >= 6 && len(ops) < 6 {
			off := int64(data[0])<<16 | int64(data[1])<<8 | int64(data[2])
			n := int64(data[3])<<8 | int64(data[4])
			fill := data[5]
			data = data[6:]
			off %= size
			n = min(1+n%(80<<10), size-off)
			p := make([]byte, n)
			if fill != 0 && fill != 0xFF {
				for i := range p {
					p[i] = fill + byte(i*7) + byte(i>>9)
				}
			}
			ops = append(ops, op{off, p, fill == 0xFF})
		}

		var log []fileWrite
		bounds := []int{0} // len(log) after each op
		top := recFile{base["/img/layer0.vhd"], &log}
		o := base.opts()
		o.OpenFile = func(path string, write bool) (File, error) {
			if path == "/img/layer0.vhd" {
				return top, nil
			}
			return base.open(path, write)
		}
		d, err := Open("/img/layer0.vhd", o)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			var err error
			if op.discard {
				err = d.Discard(op.off, int64(len(op.p)))
			} else {
				_, err = d.WriteAt(op.p, op.off)
			}
			if err != nil {
				t.Fatal(err)
			}
			m := append([]byte(nil), models[len(models)-1]...)
			copy(m[op.off:], op.p)
			models = append(models, m)
			bounds = append(bounds, len(log))
		}
		d.Close()

		img := append([]byte(nil), initial...)
		got := make([]byte, size)
		j := 0 // ops completed
		for k := 0; k <= len(log); k++ {
			if k > 0 {
				w := log[k-1]
				if end := w.off + int64(len(w.p)); end > int64(len(img)) {
					img = append(img, make([]byte, end-int64(len(img)))...)
				}
				copy(img[w.off:], w.p)
			}
			for j+1 < len(bounds) && bounds[j+1] <= k {
				j++
			}
			fsys := memFS{"/img/layer0.vhd": newMemFile("/img/layer0.vhd", append([]byte(nil), img...))}
			for p, f := range base {
				if p != "/img/layer0.vhd" {
					fsys[p] = f
				}
			}
			d, err := Open("/img/layer0.vhd", fsys.opts())
			if err != nil {
				t.Fatalf("crash after %d of %d file writes (%d of %d writes done): open: %v", k, len(log), j, len(ops), err)
			}
			if probs := d.Check(); len(probs) > 0 {
				t.Fatalf("crash after %d file writes: check: %v", k, probs)
			}
			if _, err := d.ReadAt(got, 0); err != nil {
				t.Fatalf("crash after %d file writes: read: %v", k, err)
			}
			d.Close()
			old := models[j]
			var a, b int64 // the interrupted write's bytes may be old or new
			if j < len(ops) {
				a, b = ops[j].off, ops[j].off+int64(len(ops[j].p))
			}
			if bytes.Equal(got, old) {
				continue
			}
			for i := range got {
				if got[i] == old[i] {
					continue
				}
				if int64(i) >= a && int64(i) < b && got[i] == models[j+1][i] {
					continue
				}
				t.Fatalf("crash after %d file writes (%d of %d writes done): byte %d is 0x%02x, want 0x%02x (old) or the interrupted write's", k, j, len(ops), i, got[i], old[i])
			}
		}
	})
}
