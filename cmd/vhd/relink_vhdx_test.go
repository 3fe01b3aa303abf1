package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestRelinkVHDXCLI: the parent of an AVHDX renamed beside it; after
// relink, 7-Zip and libvhdi (vhdimount) read the chain as the model written
// in the test, the parent is unchanged, and vhd check is clean. A VHD given
// as the new parent is refused.
func TestRelinkVHDXCLI(t *testing.T) {
	needTool(t, "7zz")
	rng := rand.New(rand.NewPCG(73, 73))
	dir := t.TempDir()
	const size = 6 << 20
	parent, child := filepath.Join(dir, "base.vhdx"), filepath.Join(dir, "snap.avhdx")
	vhd(t, "create", parent, fmt.Sprint(size))
	model := make([]byte, size)
	writeModel(t, rng, parent, model, 4)
	vhd(t, "create", "--parent", parent, child)
	writeModel(t, rng, child, model, 4)
	moved := filepath.Join(dir, "renamed base.vhdx")
	if err := os.Rename(parent, moved); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runVHD("check", child); code == 0 {
		t.Fatal("check passed with the parent renamed away")
	}
	vhdFile := filepath.Join(dir, "x.vhd")
	vhd(t, "create", vhdFile, fmt.Sprint(size))
	if code, _, errs := runVHD("relink", "--parent", vhdFile, child); code != exitFail || !strings.Contains(errs, "parent mismatch") {
		t.Errorf("relink to a VHD: exit %d, %s", code, errs)
	}
	ps := fileSum(t, moved)
	out := vhd(t, "relink", "--parent", moved, child)
	if !strings.Contains(out, "relinked "+child+" to "+moved) {
		t.Errorf("output %q", out)
	}
	if fileSum(t, moved) != ps {
		t.Error("relink changed the parent")
	}
	if code, out, errs := runVHD("check", child); code != 0 {
		t.Errorf("check after relink: exit %d: %s%s", code, out, errs)
	}
	cmd := exec.Command("7zz", "e", "-tvhdx", "-so", filepath.Base(child))
	cmd.Dir = dir
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("7zz: %v", err)
	}
	sameBytes(t, "7-Zip reading the relinked chain", got, model)

	_, err = exec.LookPath("vhdimount")
	testenv.Require(t, err == nil, "vhdimount is not installed (apt-get install libvhdi-utils)")
	_, err = os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "no /dev/fuse")
	mnt := t.TempDir()
	if b, err := exec.Command("vhdimount", child, mnt).CombinedOutput(); err != nil {
		t.Fatalf("vhdimount: %v: %s", err, b)
	}
	got, err = os.ReadFile(filepath.Join(mnt, "vhdi2"))
	if e := exec.Command("fusermount", "-u", mnt).Run(); e != nil {
		t.Errorf("fusermount -u: %v", e)
	}
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "libvhdi reading the relinked chain", got, model)
}
