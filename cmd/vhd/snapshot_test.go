package main

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestCommitInterop: data written into a child over a fixed, a dynamic and
// a differencing parent (mixed block sizes, sub-sector and unaligned writes)
// is committed; then qemu-img (fixed and dynamic parents) and 7-Zip read the
// parent as the model of the chain before the commit, and 7-Zip reads the emptied child's chain the
// same. A sibling beside the parent refuses the commit first, listing it,
// and nothing is written.
func TestCommitInterop(t *testing.T) {
	needTool(t, "qemu-img")
	needTool(t, "7zz")
	rng := rand.New(rand.NewPCG(71, 71))
	const size = 9<<20 + 1536
	for _, c := range []struct{ name, typ, pbs, cbs string }{
		{"fixed", "fixed", "", ""},
		{"dynamic", "dynamic", "512K", "128K"},
		{"dynamic-remove", "dynamic", "64K", ""},
		{"differencing", "differencing", "256K", "1M"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			parent, child := filepath.Join(dir, "parent.vhd"), filepath.Join(dir, "child.vhd")
			model := make([]byte, size)
			if c.typ == "differencing" { // the parent is itself a child of a dynamic disk
				grand := filepath.Join(dir, "grand.vhd")
				vhd(t, "create", "--block-size", "64K", grand, fmt.Sprint(size))
				writeModel(t, rng, grand, model, 4)
				vhd(t, "create", "--parent", grand, "--block-size", c.pbs, parent)
			} else {
				args := []string{"create", "-t", c.typ, parent, fmt.Sprint(size)}
				if c.pbs != "" {
					args = append(args, "--block-size", c.pbs)
				}
				vhd(t, args...)
			}
			writeModel(t, rng, parent, model, 6)
			args := []string{"create", "--parent", parent, child}
			if c.cbs != "" {
				args = append(args, "--block-size", c.cbs)
			}
			vhd(t, args...)
			writeModel(t, rng, child, model, 12)

			sib := filepath.Join(dir, "sibling.vhd")
			vhd(t, "create", "--parent", parent, sib)
			ps, cs := fileSum(t, parent), fileSum(t, child)
			code, out, errs := runVHD("commit", child)
			if code != exitFail || out != "" || !strings.Contains(errs, sib) || !strings.Contains(errs, "--force") {
				t.Fatalf("commit beside a sibling: exit %d, stdout %q, stderr %q", code, out, errs)
			}
			if fileSum(t, parent) != ps || fileSum(t, child) != cs {
				t.Fatal("a refused commit changed a file")
			}
			os.Remove(sib)

			args = []string{"commit", child}
			if strings.HasSuffix(c.name, "remove") {
				args = append(args, "--remove")
			}
			out = vhd(t, args...)
			if !strings.Contains(out, "committed "+child+" into "+parent) {
				t.Errorf("output %q", out)
			}
			if c.typ != "differencing" { // qemu ignores a VHD's parent
				sameBytes(t, "qemu-img reading the parent", qemuRead(t, parent), model)
			}
			sameBytes(t, "7-Zip reading the parent", sevenZipRead(t, parent), model)
			if strings.HasSuffix(c.name, "remove") {
				if _, err := os.Stat(child); !os.IsNotExist(err) {
					t.Errorf("--remove left %s (%v)", child, err)
				}
				return
			}
			sameBytes(t, "7-Zip reading the emptied child", sevenZipRead(t, child), model)
			if fi, _ := os.Stat(child); fi.Size() > 64<<10 {
				t.Errorf("the emptied child is %d bytes", fi.Size())
			}
			if code, out, errs := runVHD("check", child); code != 0 {
				t.Errorf("check after commit: exit %d: %s%s", code, out, errs)
			}
		})
	}
}

// TestRelinkCLI: a parent moved into another directory under another name;
// after relink, 7-Zip (which follows W2ru) and vhd read the chain as the
// model, and a second relink back to the first place works too.
func TestRelinkCLI(t *testing.T) {
	needTool(t, "7zz")
	rng := rand.New(rand.NewPCG(72, 72))
	dir := t.TempDir()
	const size = 5 << 20
	parent, child := filepath.Join(dir, "parent.vhd"), filepath.Join(dir, "child.vhd")
	vhd(t, "create", parent, fmt.Sprint(size))
	model := make([]byte, size)
	writeModel(t, rng, parent, model, 4)
	vhd(t, "create", "--parent", parent, child)
	writeModel(t, rng, child, model, 4)
	moved := filepath.Join(dir, "elsewhere", "renamed base.vhd")
	os.Mkdir(filepath.Dir(moved), 0o755)
	if err := os.Rename(parent, moved); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runVHD("check", child); code == 0 || !strings.Contains(errs, "parent not found") {
		t.Fatalf("check before relink: exit %d, %s", code, errs)
	}
	ps := fileSum(t, moved)
	out := vhd(t, "relink", "--parent", moved, child)
	if !strings.Contains(out, "relinked "+child+" to "+moved) {
		t.Errorf("output %q", out)
	}
	if fileSum(t, moved) != ps {
		t.Error("relink changed the parent")
	}
	sameBytes(t, "7-Zip reading the relinked chain", sevenZipRead(t, child), model)
	if code, out, errs := runVHD("check", child); code != 0 {
		t.Errorf("check after relink: exit %d: %s%s", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"relink", child}, "--parent NEWPATH is required"},
		{[]string{"relink", "--parent", moved}, "want CHILD"},
		{[]string{"commit"}, "want CHILD"},
	} {
		if code, _, errs := runVHD(c.args...); code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
	other := filepath.Join(dir, "other.vhd")
	vhd(t, "create", other, "5M")
	if code, _, errs := runVHD("relink", "--parent", other, child); code != exitFail || !strings.Contains(errs, "parent mismatch") {
		t.Errorf("relink to another image: exit %d, %s", code, errs)
	}
	vhdx := filepath.Join(dir, "x.vhdx")
	os.WriteFile(vhdx, append([]byte("vhdxfile"), make([]byte, 1<<20)...), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{{[]string{"commit", vhdx}, "no valid header"}, {[]string{"relink", "--parent", moved, vhdx}, "a child's parent must have its format"}} {
		args := c.args
		if code, _, errs := runVHD(args...); code != exitFail || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %s", args, code, errs)
		}
	}
}
