package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestResizeCommand: absolute and relative sizes, --shrink, and refusals
// (smaller without --shrink, an image in use); the footer is read by hand.
func TestResizeCommand(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "r.vhd")
	if code, _, e := runVHD("create", "-t", "fixed", img, "10M"); code != 0 {
		t.Fatal(e)
	}
	for _, c := range []struct {
		args []string
		code int
		size int64 // after
		msg  string
	}{
		{[]string{"resize", img, "+6M"}, 0, 16 << 20, "-> 16777216 bytes"},
		{[]string{"resize", img, "12M"}, 1, 16 << 20, "use --shrink"},
		{[]string{"resize", "--shrink", img, "-4M"}, 0, 12 << 20, "-> 12582912 bytes"},
		{[]string{"resize", img, "12M"}, 0, 12 << 20, "already"},
		{[]string{"resize", img, "12345"}, 2, 12 << 20, "not a multiple of 512"},
	} {
		code, out, e := runVHD(c.args...)
		if code != c.code || !strings.Contains(out+e, c.msg) {
			t.Errorf("%v: exit %d, %q %q; want %d and %q", c.args, code, out, e, c.code, c.msg)
		}
		if size, _, fsize := footerFields(t, img); size != c.size || fsize != c.size+512 {
			t.Errorf("%v: CurrentSize %d, file %d bytes; want %d", c.args, size, fsize, c.size)
		}
	}
	d, err := format.Open(img, nil) // in use
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if code, _, e := runVHD("resize", img, "20M"); code != 1 || !strings.Contains(e, "in use") {
		t.Errorf("resize of an image in use: exit %d, %q", code, e)
	}
}

// TestSpaceCommandsRefuseVHDX: resize says VHDX is not supported yet, and
// leaves the file alone.
func TestSpaceCommandsRefuseVHDX(t *testing.T) {
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img not installed")
	img := filepath.Join(t.TempDir(), "x.vhdx")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v %s", err, out)
	}
	before, _ := os.ReadFile(img)
	for _, args := range [][]string{{"resize", img, "128M"}} {
		if code, _, e := runVHD(args...); code != 1 || !strings.Contains(e, "is not supported for VHDX yet") {
			t.Errorf("%v: exit %d, %q", args, code, e)
		}
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Error("the VHDX file changed")
	}
}
