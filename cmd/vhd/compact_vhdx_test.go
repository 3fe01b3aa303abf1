package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// flatSHA256 hashes the flat view of an image.
func flatSHA256(t *testing.T, path string) string {
	t.Helper()
	d, err := format.Open(path, &format.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(d, 0, d.Size())); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// copySparse copies src to dst, leaving zeros as holes.
func copySparse(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.WriteSparse(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCompactCorpusVHDX: `vhd compact` on copies (in a temporary
// directory) of real VHDX files Hyper-V and Windows made: dynamic, fixed,
// and a Hyper-V checkpoint (.avhdx, PARTIALLY_PRESENT blocks) over its
// parent. The flat view hashes to the corpus's sha256 before and after,
// the file stores no more than before, and `vhd check` accepts the result.
func TestCompactCorpusVHDX(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	want := map[string]string{}
	for _, c := range testenv.Cases(t, corpus) {
		want[c.Open] = c.SHA256
	}
	for _, c := range []struct {
		open   string
		parent string // beside the child, by the name its locator gives
	}{
		{"real/dissect-hypervisor/dynamic.vhdx.gz", ""},
		{"real/dissect-hypervisor/fixed.vhdx.gz", ""},
		{"real/qemu-iotests/iotest-dynamic-1G.vhdx.bz2", ""},
		{"generated/dissect-avhdx-synthparent/differencing.avhdx.gz", "generated/dissect-avhdx-synthparent/Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx.gz"},
	} {
		t.Run(filepath.Base(c.open), func(t *testing.T) {
			sum := want[c.open]
			if sum == "" {
				t.Fatalf("cases.json has no sha256 for %s", c.open)
			}
			dir := t.TempDir()
			img := filepath.Join(dir, filepath.Base(testenv.Unpack(t, corpus, c.open)))
			copySparse(t, testenv.Unpack(t, corpus, c.open), img)
			if c.parent != "" {
				p := testenv.Unpack(t, corpus, c.parent)
				copySparse(t, p, filepath.Join(dir, filepath.Base(p)))
			}
			if got := flatSHA256(t, img); got != sum {
				t.Fatalf("before: sha256 %s, want %s", got, sum)
			}
			before, _ := os.Stat(img)
			code, out, e := runVHD("compact", img)
			if code != 0 || !strings.Contains(out, "reclaimed") {
				t.Fatalf("compact: exit %d, %q %q", code, out, e)
			}
			t.Log(strings.TrimSpace(out))
			if got := flatSHA256(t, img); got != sum {
				t.Fatalf("after: sha256 %s, want %s", got, sum)
			}
			after, _ := os.Stat(img)
			if after.Size() > before.Size() {
				t.Errorf("file grew: %d → %d bytes", before.Size(), after.Size())
			}
			if b, a := before.Sys().(*syscall.Stat_t).Blocks, after.Sys().(*syscall.Stat_t).Blocks; a > b {
				t.Errorf("the file stores more: %d → %d blocks of 512 bytes", b, a)
			}
			if code, out, e := runVHD("check", img); code != 0 {
				t.Errorf("check: exit %d, %q %q", code, out, e)
			}
			if c.parent == "" {
				if _, err := exec.LookPath("qemu-img"); err == nil && !strings.Contains(c.open, "4096") {
					if b, err := exec.Command("qemu-img", "check", "-f", "vhdx", img).CombinedOutput(); err != nil {
						t.Errorf("qemu-img check: %v\n%s", err, b)
					}
				}
			}
		})
	}
}
