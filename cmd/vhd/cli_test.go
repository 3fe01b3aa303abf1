package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// runMainEnv, set to 1, makes the test binary run the vhd command itself, so
// tests can signal a real process without building one.
const runMainEnv = "VHD_TEST_RUN_MAIN"

// vhdCommand returns a command that runs vhd with args in a process of its own.
func vhdCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	return cmd
}

// runVHD runs vhd in-process and returns its exit code, stdout and stderr.
func runVHD(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// checkOneLine fails unless msg is exactly one line with one "vhd" prefix.
func checkOneLine(t *testing.T, msg string) {
	t.Helper()
	if !strings.HasSuffix(msg, "\n") || strings.Count(msg, "\n") != 1 {
		t.Errorf("message is not one line: %q", msg)
	}
	if strings.Contains(msg, ": vhd: ") || strings.Contains(msg, "vhd: vhd") {
		t.Errorf("doubled vhd: prefix: %q", msg)
	}
}

// TestExitCodesAndMessages: usage errors exit 2 with one line that points to
// --help; failures exit 1 with one line naming the file and the problem;
// check exits 2 when it cannot read the image.
func TestExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	notVHD := filepath.Join(dir, "notes.txt")
	os.WriteFile(notVHD, bytes.Repeat([]byte("x"), 2048), 0o644)
	vhdx := filepath.Join(dir, "disk.vhdx")
	os.WriteFile(vhdx, append([]byte("vhdxfile"), make([]byte, 1<<20)...), 0o644)
	vhdxNoExt := filepath.Join(dir, "disk.img")
	os.WriteFile(vhdxNoExt, append([]byte("vhdxfile"), make([]byte, 1<<20)...), 0o644)
	img := filepath.Join(dir, "img.vhd")
	if code, _, e := runVHD("create", img, "1M"); code != 0 {
		t.Fatal(e)
	}
	corpus := testenv.CorpusDir(t)
	orphan := testenv.Unpack(t, corpus, "real/dfvfs/fat-differential.vhd")
	a := filepath.Join(dir, "a.vhd")
	o := filepath.Join(dir, "o")
	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{nil, 2, []string{"no command", "see 'vhd --help'"}},
		{[]string{"bogus"}, 2, []string{`unknown command "bogus"`, "see 'vhd --help'"}},
		{[]string{"info"}, 2, []string{"vhd info: want one IMAGE", "see 'vhd info --help'"}},
		{[]string{"info", img, img}, 2, []string{"want one IMAGE, got 2"}},
		{[]string{"info", "--bogus", img}, 2, []string{"not defined: -bogus", "see 'vhd info --help'"}},
		{[]string{"check", "--block-size", "1M", img}, 2, []string{"not defined: -block-size"}},
		{[]string{"create", a, "12Q"}, 2, []string{`size "12Q": want a whole number`}},
		{[]string{"create", a, "abc"}, 2, []string{`size "abc": want a whole number`}},
		{[]string{"create", a, "-5"}, 2, []string{"size -5: must be positive"}},
		{[]string{"create", a, "0"}, 2, []string{"size 0: must be positive"}},
		{[]string{"create", a, "3000G"}, 2, []string{"3000G is larger than the VHD limit of 2040 GiB"}},
		{[]string{"create", a, "99999999999T"}, 2, []string{"too large"}},
		{[]string{"create", a, "1000"}, 2, []string{"not a multiple of 512"}},
		{[]string{"create", a}, 2, []string{"want IMAGE and SIZE"}},
		{[]string{"create", "-t", "sparse", a, "1M"}, 2, []string{`-t "sparse": want fixed or dynamic`}},
		{[]string{"create", "-t", "fixed", "--block-size", "1M", a, "1M"}, 2, []string{"--block-size does not apply to a fixed disk"}},
		{[]string{"create", "--block-size", "3M", a, "8M"}, 2, []string{"--block-size 3M: want a power of two"}},
		{[]string{"create", "--block-size", "-1", a, "8M"}, 2, []string{"--block-size -1: must be positive"}},
		{[]string{"create", "--parent", img, "-t", "fixed", a}, 2, []string{"-t does not apply to a differencing disk"}},
		{[]string{"create", "--parent", img, a, "1M"}, 2, []string{"give no SIZE"}},
		{[]string{"create", img, "1M"}, 1, []string{img + ": file exists"}},
		{[]string{"convert", "-O", "qcow2", notVHD, o}, 2, []string{`-O "qcow2": want raw, fixed, dynamic, vhdx or vhdx-fixed`, "see 'vhd convert --help'"}},
		{[]string{"convert", notVHD, o}, 2, []string{"-O is required"}},
		{[]string{"convert", "-O", "raw", notVHD}, 2, []string{"want SRC and DST, got 1"}},
		{[]string{"convert", "-O", "raw", "--block-size", "1M", img, o}, 2, []string{"--block-size applies only to -O dynamic"}},
		{[]string{"convert", "-O", "fixed", "--block-size", "1M", img, o}, 2, []string{"--block-size applies only to -O dynamic"}},
		{[]string{"convert", "-O", "dynamic", "-f", "raw", "--parent", img, notVHD, o}, 2, []string{"--parent does not apply to a raw SRC"}},
		{[]string{"convert", "-O", "dynamic", "-f", "qcow2", notVHD, o}, 2, []string{`-f "qcow2": want vhd or raw`}},
		{[]string{"convert", "-O", "dynamic", notVHD, o, "--block-size"}, 2, []string{"flag needs an argument: -block-size"}},
		{[]string{"info", notVHD}, 1, []string{notVHD, "not a VHD"}},
		{[]string{"info", filepath.Join(dir, "missing.vhd")}, 1, []string{filepath.Join(dir, "missing.vhd") + ": no such file or directory"}},
		{[]string{"check", orphan}, 2, []string{"parent not found", `W2ru ".\fat-parent.vhd"`, `W2ku (basename) "C:\Projects\dfvfs\test_data\fat-parent.vhd"`, "no such file"}},
		{[]string{"info", vhdx}, 1, []string{vhdx + ": no valid header", "header 1 Signature at 0x10000"}},
		{[]string{"check", vhdx}, 2, []string{vhdx + ": no valid header"}},
		{[]string{"convert", "-O", "raw", vhdx, o}, 1, []string{vhdx + ": no valid header"}},
		{[]string{"convert", "-O", "dynamic", vhdxNoExt, o}, 1, []string{vhdxNoExt + ": no valid header"}},
		{[]string{"check", notVHD}, 2, []string{"cannot check", notVHD, "not a VHD"}},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errs := runVHD(c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, c.code, errs)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			for _, w := range c.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q lacks %q", errs, w)
				}
			}
			if strings.Contains(errs, "not a VHD") && strings.Contains(errs, "VHDX") {
				t.Errorf("VHDX reported as not a VHD: %q", errs)
			}
			checkOneLine(t, errs)
		})
	}
	if _, err := os.Stat(o); err == nil {
		t.Errorf("a refused convert wrote %s", o)
	}
}

var flagRE = regexp.MustCompile(`(?:^|[\s\[])(--?[a-zA-Z][a-zA-Z-]*)`)

// flagsIn returns the flags named in s, sorted, without -h/--help.
func flagsIn(s string) []string {
	var fl []string
	for _, m := range flagRE.FindAllStringSubmatch(s, -1) {
		if f := m[1]; f != "-h" && f != "--help" && !slices.Contains(fl, f) {
			fl = append(fl, f)
		}
	}
	slices.Sort(fl)
	return fl
}

// TestHelp: --help and -h print to stdout and exit 0; each command's usage
// lines name exactly the flags its option list describes, and the main
// usage shows the same lines.
func TestHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help", "help"} {
		code, out, errs := runVHD(h)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: vhd COMMAND") {
			t.Errorf("vhd %s: exit %d, stdout %q, stderr %q", h, code, out, errs)
		}
	}
	_, top, _ := runVHD("--help")
	for _, cmd := range []string{"info", "create", "convert", "check", "resize", "compact", "commit", "relink"} {
		for _, h := range []string{"-h", "--help"} {
			code, out, errs := runVHD(cmd, h)
			if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: vhd "+cmd) {
				t.Fatalf("vhd %s %s: exit %d, stdout %q, stderr %q", cmd, h, code, out, errs)
			}
			usagePart, opts, found := strings.Cut(out, "\nOptions:\n")
			if !found {
				t.Fatalf("vhd %s --help has no Options:\n%s", cmd, out)
			}
			var lines []string
			for _, l := range strings.Split(usagePart, "\n") {
				l = strings.TrimSpace(strings.TrimPrefix(l, "usage:"))
				if strings.HasPrefix(l, "vhd "+cmd) {
					lines = append(lines, l)
					if !strings.Contains(top, strings.TrimPrefix(l, "vhd ")) {
						t.Errorf("main usage lacks %q", l)
					}
				}
			}
			var optNames strings.Builder
			for _, l := range strings.Split(opts, "\n") {
				if strings.HasPrefix(l, "  -") {
					optNames.WriteString(l + "\n")
				}
			}
			if u, o := flagsIn(strings.Join(lines, "\n")), flagsIn(optNames.String()); !slices.Equal(u, o) {
				t.Errorf("vhd %s: usage lines name %v, option list %v", cmd, u, o)
			}
		}
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

// TestInfoWindowsPaths: vhd info prints a Windows child's parent name and
// locators as stored, backslashes single.
func TestInfoWindowsPaths(t *testing.T) {
	child := testenv.Unpack(t, testenv.CorpusDir(t), "generated/dfvfs-fat-synthparent/fat-differential.vhd.gz")
	code, out, errs := runVHD("info", child)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, w := range []string{`W2ru    ".\fat-parent.vhd"`, `"C:\Projects\dfvfs\test_data\fat-parent.vhd"`} {
		if !strings.Contains(out, w) {
			t.Errorf("info lacks %s:\n%s", w, out)
		}
	}
	if strings.Contains(out, `\\`) {
		t.Errorf("doubled backslashes:\n%s", out)
	}
}

// TestConvertFailureKeepsDst: a conversion that fails midway (a block of the
// source points past its end) leaves an existing DST as it was, even with
// --force, and no temporary file behind; the message names the source.
func TestConvertFailureKeepsDst(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.vhd")
	raw := filepath.Join(dir, "data.raw")
	os.WriteFile(raw, bytes.Repeat([]byte{7}, 8<<20), 0o644)
	if code, _, e := runVHD("convert", "-O", "dynamic", "-f", "raw", raw, src); code != 0 {
		t.Fatal(e)
	}
	b, _ := os.ReadFile(src)
	b[1536+4*3] = 0x7F // BAT entry 3 now points far past the end of the file
	os.WriteFile(src, b, 0o644)
	dst := filepath.Join(dir, "dst.raw")
	os.WriteFile(dst, []byte("precious"), 0o644)
	code, _, errs := runVHD("convert", "-O", "raw", "--force", src, dst)
	if code != 1 || !strings.Contains(errs, "BAT entry 3") || !strings.Contains(errs, src) {
		t.Fatalf("exit %d, stderr %q; want 1 naming %s and BAT entry 3", code, errs, src)
	}
	checkOneLine(t, errs)
	if got, _ := os.ReadFile(dst); string(got) != "precious" {
		t.Errorf("DST changed: %d bytes", len(got))
	}
	noTemp(t, dir, "src.vhd", "data.raw", "dst.raw")
}

// noTemp fails if dir holds anything but names.
func noTemp(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !slices.Contains(names, e.Name()) {
			t.Errorf("left in %s: %s", dir, e.Name())
		}
	}
}

// randomDisk writes a raw disk of size bytes: random data in its first MiB
// and at 3 MiB, zeros (written, not holes) at 1 MiB, holes elsewhere.
func randomDisk(t *testing.T, path string, size int64, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	want := make([]byte, size)
	for i := range want[:1<<20] {
		want[i] = byte(rng.Uint32())
	}
	if size >= 4<<20 {
		for i := 3 << 20; i < 3<<20+100000; i++ {
			want[i] = byte(rng.Uint32())
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testenv.WriteSparse(f, bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if size >= 2<<20 {
		f.WriteAt(make([]byte, 1<<20), 1<<20)
	}
	return want
}

// TestConvertDestinations: a device node, FIFO, directory or dangling link
// is refused (before, --force renamed a regular file over /dev/null); a
// symbolic link to a file writes the file and stays a link; an existing
// file keeps its permissions.
func TestConvertDestinations(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	want := randomDisk(t, src, 4<<20, 1)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "nowhere"), dangling)
	for _, c := range []struct{ dst, want string }{
		{"/dev/null", "/dev/null: is a character device"},
		{fifo, fifo + ": is a FIFO"},
		{sub, sub + ": is a directory"},
		{dangling, dangling + ": is a symbolic link to a missing file"},
	} {
		t.Run(c.dst, func(t *testing.T) {
			done := make(chan struct{})
			var code int
			var errs string
			go func() {
				defer close(done)
				code, _, errs = runVHD("convert", "-O", "raw", "-f", "raw", "--force", src, c.dst)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("convert hangs")
			}
			if code != 1 || !strings.Contains(errs, c.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errs, c.want)
			}
			checkOneLine(t, errs)
		})
	}
	if fi, err := os.Lstat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a character device: %v %v", fi.Mode(), err)
	}
	if fi, _ := os.Lstat(fifo); fi.Mode()&os.ModeNamedPipe == 0 {
		t.Error("the FIFO was replaced")
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); err == nil {
		t.Error("wrote through a dangling link")
	}

	// A symlink to a file: the file is written, the link stays.
	target := filepath.Join(dir, "target.raw")
	os.WriteFile(target, []byte("old"), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink("target.raw", link)
	if code, _, errs := runVHD("convert", "-O", "raw", "-f", "raw", src, link); code != 1 || !strings.Contains(errs, link+": exists; use --force") {
		t.Errorf("without --force: exit %d, %q", code, errs)
	}
	if code, _, errs := runVHD("convert", "-O", "raw", "-f", "raw", "--force", src, link); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v", err)
	}
	got, _ := os.ReadFile(target)
	sameBytes(t, "the link's target", got, want)
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("target mode %v, want 0600 as before", fi.Mode().Perm())
	}
	noTemp(t, dir, "src.raw", "fifo", "sub", "dangling", "target.raw", "link")
}

// TestConvertLockedDst: a DST locked by another process (a read-write
// vhdmount mount holds an exclusive flock on its image) is not replaced.
func TestConvertLockedDst(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	randomDisk(t, src, 2<<20, 2)
	dst := filepath.Join(dir, "dst.vhd")
	if code, _, e := runVHD("create", dst, "2M"); code != 0 {
		t.Fatal(e)
	}
	before, _ := os.ReadFile(dst)
	lk, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"raw", "dynamic"} {
		code, _, errs := runVHD("convert", "-O", typ, "-f", "raw", "--force", src, dst)
		if code != 1 || !strings.Contains(errs, dst+": image in use") {
			t.Errorf("-O %s over a locked DST: exit %d, %q; want 1, image in use", typ, code, errs)
		}
		checkOneLine(t, errs)
	}
	if after, _ := os.ReadFile(dst); !bytes.Equal(after, before) {
		t.Error("the locked DST changed")
	}
	var st1, st2 syscall.Stat_t
	syscall.Fstat(int(lk.Fd()), &st1)
	syscall.Stat(dst, &st2)
	if st1.Ino != st2.Ino {
		t.Error("the locked DST was replaced by another file")
	}
	syscall.Flock(int(lk.Fd()), syscall.LOCK_UN)
	if code, _, errs := runVHD("convert", "-O", "dynamic", "-f", "raw", "--force", src, dst); code != 0 {
		t.Errorf("once unlocked: exit %d, %s", code, errs)
	}
	noTemp(t, dir, "src.raw", "dst.vhd")
}

// TestConvertLoopDevice: convert -O raw --force into a block device (a loop
// device over a temporary file) writes the whole disk in place, zeros
// included, and leaves the rest of the device; a VHD output, a too small
// device and a missing --force are refused.
func TestConvertLoopDevice(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "needs root for losetup")
	_, err := exec.LookPath("losetup")
	testenv.Require(t, err == nil, "losetup is not installed")
	dir := t.TempDir()
	back := filepath.Join(dir, "backing")
	const devSize = 8 << 20
	os.WriteFile(back, bytes.Repeat([]byte{0xAA}, devSize), 0o644)
	out, err := exec.Command("losetup", "--find", "--show", back).CombinedOutput()
	testenv.Require(t, err == nil, fmt.Sprintf("losetup: %v: %s", err, out))
	dev := strings.TrimSpace(string(out))
	detached := false
	detach := func() {
		if !detached {
			detached = true
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", dev, err, out)
			}
		}
	}
	t.Cleanup(detach)

	src := filepath.Join(dir, "src.raw")
	want := randomDisk(t, src, 6<<20, 3)
	big := filepath.Join(dir, "big.raw")
	randomDisk(t, big, devSize+1<<20, 4)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-O", "raw", "-f", "raw", src, dev}, dev + ": exists; use --force"},
		{[]string{"-O", "dynamic", "-f", "raw", "--force", src, dev}, dev + ": is a block device; only a raw output"},
		{[]string{"-O", "raw", "-f", "raw", "--force", big, dev}, dev + ": device is 8388608 bytes, smaller than the 9437184-byte disk"},
	} {
		code, _, errs := runVHD(append([]string{"convert"}, c.args...)...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("convert %v: exit %d, %q; want 1 and %q", c.args, code, errs, c.want)
		}
		checkOneLine(t, errs)
	}
	// A device claimed exclusively (as a mount does) is in use.
	claim, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs := runVHD("convert", "-O", "raw", "-f", "raw", "--force", src, dev)
	claim.Close()
	if code != 1 || !strings.Contains(errs, dev+": device in use") {
		t.Errorf("claimed device: exit %d, %q; want 1, device in use", code, errs)
	}
	if code, _, errs := runVHD("convert", "-O", "raw", "-f", "raw", "--force", src, dev); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if fi, err := os.Stat(dev); err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		t.Fatalf("%s is no longer a block device", dev)
	}
	// The device is also a raw SRC: its size comes from the device.
	fromDev := filepath.Join(dir, "fromdev.vhd")
	if code, _, errs := runVHD("convert", "-O", "dynamic", "-f", "raw", dev, fromDev); code != 0 {
		t.Fatalf("device as SRC: exit %d: %s", code, errs)
	}
	detach()
	got, _ := os.ReadFile(back)
	sameBytes(t, "qemu-img reading the device converted", qemuRead(t, fromDev), got)
	sameBytes(t, "device's disk", got[:len(want)], want)
	if !bytes.Equal(got[len(want):], bytes.Repeat([]byte{0xAA}, devSize-len(want))) {
		t.Error("the device past the disk changed")
	}
}

// slowSource makes a 1 TiB dynamic disk whose reading takes minutes while
// the file holds 4 MiB: every BAT entry points at one block of data (a
// sparse fixed disk would not do: its holes are skipped).
func slowSource(t *testing.T, path string) {
	t.Helper()
	if code, _, e := runVHD("create", "--block-size", "2M", path, "1T"); code != 0 {
		t.Fatal(e)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	footer := append([]byte(nil), b[len(b)-512:]...)
	hdr := int64(binary.BigEndian.Uint64(footer[0x10:]))
	bat := int64(binary.BigEndian.Uint64(b[hdr+0x10:]))
	blk := int64(len(b) - 512)                                  // the block goes where the footer was
	block := bytes.Repeat([]byte{0xFF}, 512)                    // bitmap: all present
	block = append(block, bytes.Repeat([]byte{0x5A}, 2<<20)...) // data
	for i := range 1 << 19 {
		binary.BigEndian.PutUint32(b[bat+4*int64(i):], uint32(blk/512))
	}
	b = append(append(b[:blk], block...), footer...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConvertSignal: SIGTERM or SIGINT during a conversion removes the
// hidden temporary file and exits 128+signal.
func TestConvertSignal(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.vhd")
	slowSource(t, src)
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(c.sig.String(), func(t *testing.T) {
			dst := filepath.Join(dir, "out.raw")
			cmd := vhdCommand("convert", "-O", "raw", src, dst)
			var errb bytes.Buffer
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
			// Wait until the temporary file exists, so the copy is under way.
			deadline := time.Now().Add(20 * time.Second)
			for {
				ents, _ := os.ReadDir(dir)
				if len(ents) > 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no temporary file appeared; stderr %q", errb.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(c.sig)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatal("convert did not stop")
			}
			if code := cmd.ProcessState.ExitCode(); code != c.code {
				t.Errorf("exit %d (%v), want %d; stderr %q", code, cmd.ProcessState, c.code, errb.String())
			}
			if !strings.Contains(errb.String(), dst+": interrupted") {
				t.Errorf("stderr %q", errb.String())
			}
			noTemp(t, dir, "big.vhd")
		})
	}
}

// TestConvertInputFormat: a .vhd that is not a VHD is an error unless -f
// raw says it is raw; a file of another name that is not a VHD is taken as
// raw, with a note, for -O fixed|dynamic only.
func TestConvertInputFormat(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.vhd")
	os.WriteFile(empty, nil, 0o644)
	junk := filepath.Join(dir, "junk.VHD")
	want := randomDisk(t, junk, 1<<20, 5)
	data := filepath.Join(dir, "data.bin")
	os.WriteFile(data, want, 0o644)
	o := filepath.Join(dir, "o")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-O", "raw", empty, o}, empty + ": "},
		{[]string{"-O", "dynamic", junk, o}, junk + ": "},
		{[]string{"-O", "raw", "-f", "raw", empty, o}, empty + ": is empty"},
		{[]string{"-O", "raw", data, o}, data + ": not a VHD image; use -f raw"},
		{[]string{"-O", "dynamic", "-f", "vhd", data, o}, data},
	} {
		code, _, errs := runVHD(append([]string{"convert"}, c.args...)...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("convert %v: exit %d, %q; want 1 and %q", c.args, code, errs, c.want)
		}
		checkOneLine(t, errs)
		if _, err := os.Stat(o); err == nil {
			t.Fatalf("convert %v wrote %s", c.args, o)
		}
	}
	for _, name := range []string{empty, junk} {
		_, _, errs := runVHD("convert", "-O", "raw", name, o)
		if !strings.Contains(errs, "not a VHD") || !strings.Contains(errs, "use -f raw") {
			t.Errorf("%s: %q does not say why and what to do", name, errs)
		}
	}
	// -f raw copies the .VHD as it is; a non-VHD of another name imports with a note.
	code, _, errs := runVHD("convert", "-O", "raw", "-f", "raw", junk, o)
	if code != 0 || errs != "" {
		t.Fatalf("-f raw: exit %d, %q", code, errs)
	}
	got, _ := os.ReadFile(o)
	sameBytes(t, "-f raw copy", got, want)
	dyn := filepath.Join(dir, "d.vhd")
	code, _, errs = runVHD("convert", "-O", "dynamic", data, dyn)
	if code != 0 || errs != "vhd: note: treating "+data+" as raw: it is not a VHD image\n" {
		t.Fatalf("import: exit %d, %q", code, errs)
	}
	sameBytes(t, "qemu-img reading the imported disk", qemuRead(t, dyn), want)
}

// TestInfoMissingParent: vhd info on a child whose parent is not there (the
// real Windows diskpart child of the corpus, published without its parent)
// still describes the child, marks the parent missing with every path tried,
// and exits 1.
func TestInfoMissingParent(t *testing.T) {
	child := testenv.Unpack(t, testenv.CorpusDir(t), "real/dfvfs/fat-differential.vhd")
	code, out, errs := runVHD("info", child)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errs)
	}
	for _, w := range []string{"layer 0: " + child, "type:           differencing", `W2ru    ".\fat-parent.vhd"`, "layer 1: MISSING"} {
		if !strings.Contains(out, w) {
			t.Errorf("info lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(errs, "parent not found") || !strings.Contains(errs, "fat-parent.vhd: no such file") {
		t.Errorf("stderr does not say what is missing: %q", errs)
	}
	code, out, _ = runVHD("info", "--json", child)
	var info struct {
		Depth         int    `json:"depth"`
		MissingParent string `json:"missing_parent"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if code != 1 || info.Depth != 0 || !strings.Contains(info.MissingParent, "parent not found") {
		t.Errorf("--json: exit %d, depth %d, missing_parent %q", code, info.Depth, info.MissingParent)
	}
}
