package main

import (
	"fmt"
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
		{[]string{"resize", img, "3T"}, 1, 12 << 20, "(2040 GiB)"}, // a VHDX could
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

// TestResizeCommandVHDX: vhd resize on a VHDX qemu-img made: relative and
// absolute sizes, past the VHD limit of 2040 GiB, --shrink, refusals; the
// size and a clean check are read back from qemu-img; --help says VHDX.
func TestResizeCommandVHDX(t *testing.T) {
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img not installed")
	img := filepath.Join(t.TempDir(), "x.vhdx")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v %s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
		size int64 // after
		msg  string
	}{
		{[]string{"resize", img, "+64M"}, 0, 128 << 20, "-> 134217728 bytes"},
		{[]string{"resize", img, "100M"}, 1, 128 << 20, "use --shrink"},
		{[]string{"resize", "--shrink", img, "-28M"}, 0, 100 << 20, "-> 104857600 bytes"},
		{[]string{"resize", img, "3T"}, 0, 3 << 40, "-> 3298534883328 bytes"},
		{[]string{"resize", "--shrink", img, "100M"}, 0, 100 << 20, "-> 104857600 bytes"},
		{[]string{"resize", img, "100M"}, 0, 100 << 20, "already"},
		{[]string{"resize", img, "12345"}, 2, 100 << 20, "not a multiple of 512"},
		{[]string{"resize", img, "65T"}, 2, 100 << 20, "64 TiB"},
	} {
		code, out, e := runVHD(c.args...)
		if code != c.code || !strings.Contains(out+e, c.msg) {
			t.Errorf("%v: exit %d, %q %q; want %d and %q", c.args, code, out, e, c.code, c.msg)
		}
		b, err := exec.Command("qemu-img", "info", "--output=json", "-f", "vhdx", img).CombinedOutput()
		if err != nil || !strings.Contains(string(b), fmt.Sprintf(`"virtual-size": %d,`, c.size)) {
			t.Errorf("%v: qemu-img info: %v %s; want the virtual size %d", c.args, err, b, c.size)
		}
		if b, err := exec.Command("qemu-img", "check", "-f", "vhdx", img).CombinedOutput(); err != nil {
			t.Errorf("%v: qemu-img check: %v %s", c.args, err, b)
		}
	}
	if _, out, _ := runVHD("resize", "--help"); !strings.Contains(out, "VHDX") || strings.Contains(out, "not supported") {
		t.Errorf("resize --help: %q", out)
	}
}
