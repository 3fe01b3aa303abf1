package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func qemuInfo(t *testing.T, path string) map[string]any {
	t.Helper()
	needTool(t, "qemu-img")
	b, err := exec.Command("qemu-img", "info", "--output=json", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v: %s", path, err, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("qemu-img", "check", "-f", "vhdx", path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check %s: %v: %s", path, err, b)
	}
	return m
}

// TestCreateVHDXCLI: the format comes from --format or the name; qemu-img
// sees the created images as VHDX of the asked size and checks them clean;
// a child reads its parent's bytes; conflicts and bad values are usage
// errors; a VHD parent for a VHDX child is refused.
func TestCreateVHDXCLI(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, c := range []struct {
		args []string
		path string
		size float64
		typ  string
	}{
		{[]string{"create", p("a.vhdx"), "100M"}, p("a.vhdx"), 100 << 20, "dynamic"},
		{[]string{"create", "-t", "fixed", "--block-size", "1M", p("f.vhdx"), "10M"}, p("f.vhdx"), 10 << 20, "fixed"},
		{[]string{"create", "--format", "vhdx", p("named.img"), "3M"}, p("named.img"), 3 << 20, "dynamic"},
	} {
		code, out, errs := runVHD(c.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, errs)
		}
		if !strings.Contains(out, c.typ) {
			t.Errorf("%v: %s", c.args, out)
		}
		m := qemuInfo(t, c.path)
		if m["format"] != "vhdx" || m["virtual-size"] != c.size {
			t.Errorf("%v: qemu-img info: %v", c.args, m)
		}
	}
	// A parent with content, written by qemu-img; the child over it.
	raw := p("content.raw")
	b := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b[:5<<20] {
		b[i] = byte(rng.Uint32())
	}
	os.WriteFile(raw, b, 0o644)
	base := p("base.vhdx")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vhdx", raw, base).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	code, out, errs := runVHD("create", "--parent", base, p("child.avhdx"))
	if code != 0 || !strings.Contains(out, "differencing") || !strings.Contains(out, base) {
		t.Fatalf("create --parent: exit %d: %s%s", code, out, errs)
	}
	flat := p("flat.raw")
	if code, _, errs := runVHD("convert", "-O", "raw", p("child.avhdx"), flat); code != 0 {
		t.Fatalf("convert: exit %d: %s", code, errs)
	}
	if sha256File(t, flat) != sha256File(t, raw) {
		t.Error("the child does not read as its parent's content")
	}
	os.WriteFile(p("x.vhd"), nil, 0o644)
	if code, _, errs := runVHD("create", p("v.vhd"), "10M"); code != 0 {
		t.Fatal(errs)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"create", "--format", "vhdx", p("y.vhd"), "1M"}, 2, "named like a VHD"},
		{[]string{"create", "--format", "vhd", p("y.vhdx"), "1M"}, 2, "named like a VHDX"},
		{[]string{"create", "--format", "qcow2", p("y.img"), "1M"}, 2, `--format "qcow2": want vhd or vhdx`},
		{[]string{"create", "--sector-size", "4096", p("y.vhd"), "1M"}, 2, "applies only to a VHDX"},
		{[]string{"create", "--sector-size", "1024", p("y.vhdx"), "1M"}, 2, "want 512 or 4096"},
		{[]string{"create", "--sector-size", "4096", p("y.vhdx"), "1536"}, 2, "not a multiple of the 4096-byte sector"},
		{[]string{"create", "--block-size", "512K", p("y.vhdx"), "1M"}, 2, "from 1M to 256M"},
		{[]string{"create", p("y.vhdx"), "65T"}, 2, "64 TiB"},
		{[]string{"create", "--azure", "-t", "fixed", p("y.vhdx"), "1M"}, 2, "only to a VHD"},
		{[]string{"create", "--parent", base, "-t", "fixed", p("y.avhdx")}, 2, "-t does not apply"},
		{[]string{"create", "--parent", base, p("y.avhdx"), "1M"}, 2, "give no SIZE"},
		{[]string{"create", "--parent", p("v.vhd"), p("y.avhdx")}, 1, "is a VHD; [MS-VHDX] allows only a VHDX parent"},
		{[]string{"create", "--parent", base, p("y.vhd")}, 1, "a VHD's parent must be a VHD"},
		{[]string{"create", p("a.vhdx"), "1M"}, 1, "exists"},
	} {
		code, _, errs := runVHD(c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	for _, n := range []string{"y.vhd", "y.vhdx", "y.img", "y.avhdx"} {
		if _, err := os.Lstat(p(n)); err == nil {
			t.Errorf("%s was created by a refused command", n)
		}
	}
}

// TestConvertVHDXCLI: -O vhdx and -O vhdx-fixed from a raw file read back
// the same through qemu-img; the flags that apply only to VHDX are refused
// elsewhere.
func TestConvertVHDXCLI(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.raw")
	b := make([]byte, 12<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range b[2<<20 : 7<<20] {
		b[2<<20+i] = byte(rng.Uint32())
	}
	os.WriteFile(raw, b, 0o644)
	for _, args := range [][]string{
		{"-O", "vhdx"},
		{"-O", "vhdx-fixed", "--block-size", "1M"},
		{"-O", "vhdx", "--sector-size", "4096", "--block-size", "4M"},
	} {
		dst := filepath.Join(dir, strings.Join(args, "")+".vhdx")
		code, _, errs := runVHD(append(append([]string{"convert", "-f", "raw"}, args...), raw, dst)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		back := dst + ".raw"
		if code, _, errs := runVHD("convert", "-O", "raw", dst, back); code != 0 {
			t.Fatalf("convert back: %s", errs)
		}
		if sha256File(t, back) != sha256File(t, raw) {
			t.Errorf("%v: we read back other bytes", args)
		}
		if !strings.Contains(strings.Join(args, " "), "4096") { // qemu 7.2 refuses 4096-byte sectors
			qemuInfo(t, dst)
			q := dst + ".q.raw"
			if out, err := exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", dst, q).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v: %s", err, out)
			}
			if sha256File(t, q) != sha256File(t, raw) {
				t.Errorf("%v: qemu-img reads other bytes", args)
			}
		}
	}
	// A 4096-byte-sector VHDX source gives a 4096-byte-sector VHDX (the
	// sector size read by hand at the Logical Sector Size item: metadata
	// at 2 MiB, items from 64 KiB in Windows' order).
	src4k := filepath.Join(dir, "4k.vhdx")
	if code, _, errs := runVHD("convert", "-f", "raw", "-O", "vhdx", "--sector-size", "4096", raw, src4k); code != 0 {
		t.Fatal(errs)
	}
	for _, args := range [][]string{{"-O", "vhdx"}, {"-O", "vhdx-fixed"}, {"-O", "vhdx", "--sector-size", "512"}} {
		dst := filepath.Join(dir, "from4k"+strings.Join(args, "")+".vhdx")
		if code, _, errs := runVHD(append(append([]string{"convert"}, args...), src4k, dst)...); code != 0 {
			t.Fatalf("%v: %s", args, errs)
		}
		f, err := os.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		var lss [4]byte
		f.ReadAt(lss[:], 2<<20+64<<10+16)
		f.Close()
		want := uint32(4096)
		if len(args) > 2 {
			want = 512
		}
		if got := uint32(lss[0]) | uint32(lss[1])<<8 | uint32(lss[2])<<16; got != want {
			t.Errorf("%v from a 4096-byte-sector VHDX: logical sector size %d, want %d", args, got, want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-O", "raw", "--sector-size", "4096"}, "applies only to -O vhdx"},
		{[]string{"-O", "vhdx", "--sector-size", "1000"}, "want 512 or 4096"},
		{[]string{"-O", "vhdx", "--block-size", "64K"}, "from 1M to 256M"},
		{[]string{"-O", "vhdx", "--azure"}, "--azure needs -O fixed"},
		{[]string{"-O", "qcow2"}, "want raw, fixed, dynamic, vhdx or vhdx-fixed"},
		{[]string{"-O", "dynamic"}, "-O dynamic writes a VHD, but " + filepath.Join(dir, "no.vhdx") + " is named like a VHDX"},
		{[]string{"-O", "fixed"}, "use -O vhdx or -O vhdx-fixed"},
		{[]string{"-O", "vhdx", "--", raw, filepath.Join(dir, "no.vhd")}, "is named like a VHD; use -O fixed or -O dynamic"},
	} {
		args := append(append([]string{"convert", "-f", "raw"}, c.args...), raw, filepath.Join(dir, "no.vhdx"))
		if i := slices.Index(c.args, "--"); i >= 0 {
			args = append([]string{"convert", "-f", "raw"}, c.args...)
		}
		code, _, errs := runVHD(args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

// TestConvertVHDXSignal: SIGTERM during -O vhdx removes the hidden temporary
// file and exits 143, as for the other outputs.
func TestConvertVHDXSignal(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.vhd")
	slowSource(t, src)
	dst := filepath.Join(dir, "out.vhdx")
	cmd := vhdCommand("convert", "-O", "vhdx", src, dst)
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ents, _ := os.ReadDir(dir); len(ents) > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no temporary file appeared; stderr %q", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("convert did not stop")
	}
	if code := cmd.ProcessState.ExitCode(); code != 143 {
		t.Errorf("exit %d, want 143; stderr %q", code, errb.String())
	}
	if !strings.Contains(errb.String(), dst+": interrupted") {
		t.Errorf("stderr %q", errb.String())
	}
	noTemp(t, dir, "big.vhd")
}
