package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestExitCodesAndMessages: usage errors exit 2 with the usage; failures
// exit 1 with one line naming the file; check exits 2 when it cannot read.
func TestExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	notVHD := filepath.Join(dir, "notes.txt")
	os.WriteFile(notVHD, bytes.Repeat([]byte("x"), 2048), 0o644)
	corpus := testenv.CorpusDir(t)
	orphan := testenv.Unpack(t, corpus, "real/dfvfs/fat-differential.vhd")
	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{nil, 2, []string{"usage: vhd COMMAND"}},
		{[]string{"bogus"}, 2, []string{`unknown command "bogus"`}},
		{[]string{"info"}, 2, []string{"usage: vhd info"}},
		{[]string{"create", filepath.Join(dir, "a.vhd"), "12Q"}, 1, []string{`size "12Q"`}},
		{[]string{"create", filepath.Join(dir, "a.vhd"), "1000"}, 1, []string{"multiple of 512"}},
		{[]string{"create", "-t", "sparse", filepath.Join(dir, "a.vhd"), "1M"}, 1, []string{`-t "sparse"`}},
		{[]string{"info", notVHD}, 1, []string{"notes.txt", "not a VHD"}},
		{[]string{"info", orphan}, 1, []string{"parent not found", `W2ru ".\\fat-parent.vhd"`, `W2ku (basename) "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd"`, "no such file"}},
		{[]string{"check", notVHD}, 2, []string{"cannot check", "not a VHD"}},
		{[]string{"convert", "-O", "qcow2", notVHD, filepath.Join(dir, "o")}, 1, []string{`-O "qcow2"`}},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(c.args, &out, &errb)
			if code != c.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, c.code, errb.String())
			}
			for _, w := range c.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q lacks %q", errb.String(), w)
				}
			}
			if c.code == 1 && strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
				t.Errorf("failure message is not one line: %q", errb.String())
			}
		})
	}
}

// TestInfoJSON: vhd info --json describes every layer of a corpus chain and
// how each parent was found.
func TestInfoJSON(t *testing.T) {
	img := testenv.Unpack(t, testenv.CorpusDir(t), "generated/chain-winabs/winabs2.vhd.gz")
	var out bytes.Buffer
	if code := run([]string{"info", "--json", img}, &out, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var info struct {
		VirtualSize int64 `json:"virtual_size"`
		Depth       int   `json:"depth"`
		Layers      []struct {
			UniqueID       string `json:"unique_id"`
			ParentUniqueID string `json:"parent_unique_id"`
			FoundVia       string `json:"found_via"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != 5257216 || info.Depth != 2 || len(info.Layers) != 3 {
		t.Fatalf("size %d depth %d layers %d; want 5257216, 2, 3", info.VirtualSize, info.Depth, len(info.Layers))
	}
	for i := 0; i < 2; i++ {
		child, parent := info.Layers[i], info.Layers[i+1]
		if child.ParentUniqueID == "" || child.ParentUniqueID != parent.UniqueID {
			t.Errorf("layer %d records parent %q; layer %d is %q", i, child.ParentUniqueID, i+1, parent.UniqueID)
		}
		if parent.FoundVia != "W2ru" {
			t.Errorf("layer %d found via %q, want W2ru", i+1, parent.FoundVia)
		}
	}
}

// TestConvertFailureKeepsDst: a conversion that fails midway (a block of the
// source points past its end) leaves an existing DST as it was, even with
// --force, and no temporary file behind.
func TestConvertFailureKeepsDst(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.vhd")
	var out, errb bytes.Buffer
	if run([]string{"create", src, "8M"}, &out, &errb) != 0 {
		t.Fatal(errb.String())
	}
	raw := filepath.Join(dir, "data.raw")
	os.WriteFile(raw, bytes.Repeat([]byte{7}, 8<<20), 0o644)
	os.Remove(src)
	if run([]string{"convert", "-O", "dynamic", raw, src}, &out, &errb) != 0 {
		t.Fatal(errb.String())
	}
	b, _ := os.ReadFile(src)
	b[1536+4*3] = 0x7F // BAT entry 3 now points far past the end of the file
	os.WriteFile(src, b, 0o644)
	dst := filepath.Join(dir, "dst.raw")
	os.WriteFile(dst, []byte("precious"), 0o644)
	errb.Reset()
	if code := run([]string{"convert", "-O", "raw", "--force", src, dst}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "BAT entry 3") {
		t.Fatalf("exit %d, stderr %q; want 1 naming BAT entry 3", code, errb.String())
	}
	if got, _ := os.ReadFile(dst); string(got) != "precious" {
		t.Errorf("DST changed: %d bytes", len(got))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Errorf("files left: %v", ents)
	}
}
