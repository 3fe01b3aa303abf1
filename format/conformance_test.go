package format_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// refusals maps the corpus's expected refusal kinds onto our sentinel errors.
var refusals = map[string]error{
	"checksum":                format.ErrChecksum,
	"parent not found":        format.ErrParentNotFound,
	"parent UUID mismatch":    format.ErrParentMismatch,
	"parent linkage mismatch": format.ErrParentMismatch,
}

// TestCorpus opens every case of the shared corpus and compares the size and
// sha256 of the flat disk with the values the corpus computed with independent
// readers, or checks that the image is refused for the expected reason.
func TestCorpus(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	for _, c := range testenv.Cases(t, corpus) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			path := testenv.Unpack(t, corpus, c.Open)
			d, err := format.Open(path, &format.Options{ReadOnly: true})
			if c.Error != "" {
				want, ok := refusals[c.Error]
				if !ok {
					t.Fatalf("unknown refusal kind %q in cases.json", c.Error)
				}
				if err == nil {
					d.Close()
					t.Fatalf("opened; want refusal %q", c.Error)
				}
				if !errors.Is(err, want) {
					t.Fatalf("error %q; want %v", err, want)
				}
				if !strings.Contains(err.Error(), filepath.Base(path)) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Size() != c.Size {
				t.Fatalf("size %d, want %d", d.Size(), c.Size)
			}
			if d.Depth() != c.Depth {
				t.Errorf("depth %d, want %d", d.Depth(), c.Depth)
			}
			switch {
			case c.SHA256 != "":
				if got := hashDisk(t, d); got != c.SHA256 {
					t.Fatalf("sha256 %s, want %s", got, c.SHA256)
				}
			case strings.Contains(c.Note, "all zeros"):
				checkAllZeros(t, d)
			case strings.Contains(c.Note, "ext4-3G.raw"):
				src := filepath.Join(corpus, filepath.Dir(c.Open), "ext4-3G.raw.gz")
				if got, want := hashDisk(t, d), hashRawPadded(t, src, c.Size); got != want {
					t.Fatalf("sha256 %s, want %s (ext4-3G.raw padded with zeros)", got, want)
				}
			default:
				t.Fatalf("case has neither sha256, error nor a note this test understands: %q", c.Note)
			}
		})
	}
}

// hashDisk hashes the flat disk through ReadAt, in 4 MiB reads.
func hashDisk(t *testing.T, d *format.Disk) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(d, 0, d.Size())); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var (
	paddedMu   sync.Mutex
	paddedHash = map[string]string{}
)

// hashRawPadded hashes a gzipped raw file followed by zeros up to size.
func hashRawPadded(t *testing.T, gz string, size int64) string {
	t.Helper()
	paddedMu.Lock()
	defer paddedMu.Unlock()
	key := fmt.Sprintf("%s@%d", gz, size)
	if h, ok := paddedHash[key]; ok {
		return h
	}
	r, err := testenv.OpenGz(gz)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	if n > size {
		t.Fatalf("%s is %d bytes, more than the disk's %d", gz, n, size)
	}
	if _, err := io.CopyN(h, zeroReader{}, size-n); err != nil {
		t.Fatal(err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	paddedHash[key] = sum
	return sum
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// checkAllZeros checks a huge empty disk: no layer stores any range of it,
// and reads at the ends and at random places return zeros.
func checkAllZeros(t *testing.T, d *format.Disk) {
	t.Helper()
	if data, end := d.Extent(0); data || end != d.Size() {
		t.Fatalf("Extent(0) = %v, %d; want a hole over the whole disk (%d)", data, end, d.Size())
	}
	buf := make([]byte, 1<<20)
	offs := []int64{0, d.Size() - int64(len(buf))}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 64 {
		offs = append(offs, rng.Int64N(d.Size()/512-2048)*512)
	}
	for _, off := range offs {
		for i := range buf {
			buf[i] = 0xAA
		}
		if _, err := d.ReadAt(buf, off); err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatalf("ReadAt(%d) returned non-zero bytes", off)
		}
	}
}
