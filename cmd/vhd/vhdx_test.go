package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestVHDXInfoCheckConvert: a real Hyper-V checkpoint (AVHDX over its
// stand-in parent) and a qemu image with a pending log: info describes the
// VHDX structures, check is clean, and convert -O raw and -O dynamic give
// the corpus's sha256 (computed by independent readers).
func TestVHDXInfoCheckConvert(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	for _, c := range []struct {
		rel, typ, sha, info string
		depth               int
		check               string // what check reports; empty: clean
	}{
		{"generated/dissect-avhdx-synthparent/differencing.avhdx.gz", "differencing", "c45a36d4fe6763ad65a16527f77eeccabed983651e31b381f79647276a0c54b0", "relative_path", 1, ""},
		{"generated/vhdx-qemu/dirty-log.vhdx.gz", "dynamic", "9b0aeb1f91e70c53f861dd8186cca4dc2d8da1dd4cf6cf56248677e041ef5d6a", "replayed in memory", 0, "1 pending entries"},
	} {
		t.Run(filepath.Base(c.rel), func(t *testing.T) {
			img := testenv.Unpack(t, corpus, c.rel)
			before, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			code, out, errs := runVHD("info", "--json", img)
			if code != 0 {
				t.Fatalf("info: exit %d: %s", code, errs)
			}
			var info struct {
				Depth  int `json:"depth"`
				Layers []struct {
					Format string          `json:"format"`
					Type   string          `json:"type"`
					VHDX   json.RawMessage `json:"vhdx"`
				} `json:"layers"`
			}
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatal(err)
			}
			if info.Depth != c.depth || info.Layers[0].Format != "vhdx" || info.Layers[0].Type != c.typ || !strings.Contains(string(info.Layers[0].VHDX), c.info) {
				t.Fatalf("info: depth %d, layer 0 %s %s; want %d, vhdx %s with %q in:\n%s", info.Depth, info.Layers[0].Format, info.Layers[0].Type, c.depth, c.typ, c.info, out)
			}
			code, out, errs = runVHD("check", img)
			if c.check == "" && code != 0 {
				t.Fatalf("check: exit %d: %s%s", code, out, errs)
			}
			if c.check != "" && (code != 1 || !strings.Contains(out+errs, c.check)) {
				t.Fatalf("check: exit %d, want 1 and %q: %s%s", code, c.check, out, errs)
			}
			dir := t.TempDir()
			outs := []string{"raw", "dynamic"}
			if c.depth > 0 {
				outs = outs[:1] // 8 GiB: one flat copy is enough here (format's TestCorpus hashes it too)
			}
			for _, o := range outs {
				dst := filepath.Join(dir, "out."+o)
				if code, _, errs := runVHD("convert", "-O", o, img, dst); code != 0 {
					t.Fatalf("convert -O %s: exit %d: %s", o, code, errs)
				}
				raw := dst
				if o != "raw" {
					raw = dst + ".raw"
					if code, _, errs := runVHD("convert", "-O", "raw", dst, raw); code != 0 {
						t.Fatalf("convert back: exit %d: %s", code, errs)
					}
				}
				if got := sha256File(t, raw); got != c.sha {
					t.Errorf("-O %s: sha256 %s, want %s", o, got, c.sha)
				}
			}
			after, _ := os.ReadFile(img)
			if string(before) != string(after) {
				t.Errorf("%s changed: a read-only open must not replay the log into the file", img)
			}
		})
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
