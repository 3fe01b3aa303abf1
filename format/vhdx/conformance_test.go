package vhdx_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestCorpus reads every VHDX case of the shared corpus through the layer
// (and a test-side chain for differencing files) and compares the size and
// sha256 of the flat disk with the values the corpus computed with other
// readers, or checks that the image is refused for the expected reason.
func TestCorpus(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	n := 0
	for _, c := range testenv.Cases(t, corpus) {
		if !c.IsVHDX() {
			continue
		}
		if c.Size > 2<<30 {
			// Hashing these (8-10 GiB, mostly zeros) costs a minute of CPU
			// here; format's TestCorpus hashes them through the chain.
			continue
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			path := testenv.Unpack(t, corpus, c.Open)
			ch, err := openChain(path, openFile)
			if c.Error != "" {
				if err == nil {
					ch.Close()
					t.Fatalf("opened; want refusal %q", c.Error)
				}
				switch c.Error {
				case "parent not found":
					if !strings.Contains(err.Error(), "parent not found") {
						t.Fatalf("error %q; want parent not found", err)
					}
				case "parent linkage mismatch":
					if !errors.Is(err, layer.ErrParentMismatch) {
						t.Fatalf("error %q; want ErrParentMismatch", err)
					}
				default:
					t.Fatalf("unknown refusal kind %q in cases.json", c.Error)
				}
				if !strings.Contains(err.Error(), filepath.Base(path)) {
					t.Errorf("error %q does not name the file", err)
				}
				if !strings.Contains(err.Error(), "Generation 1_49C4BAF3") {
					t.Errorf("error %q does not name the parent path tried", err)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if len(ch)-1 != c.Depth {
				t.Errorf("chain depth %d; want %d", len(ch)-1, c.Depth)
			}
			if got := ch[0].Size(); got != c.Size {
				t.Errorf("size %d; want %d", got, c.Size)
			}
			sum, err := ch.sha256()
			if err != nil {
				t.Fatal(err)
			}
			if sum != c.SHA256 {
				if sum == c.SHA256IfLogIgnored {
					t.Fatalf("sha256 %s is the stale view: the pending log was not replayed", sum)
				}
				t.Fatalf("sha256 %s; want %s", sum, c.SHA256)
			}
		})
	}
	if n < 20 {
		t.Errorf("only %d VHDX cases in cases.json", n)
	}
}
