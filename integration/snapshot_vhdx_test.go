//go:build linux

package integration

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// qemuVHDXSize is the virtual size of the VHDX made by readOnlyVHDX.
const qemuVHDXSize = 32 << 20

// readOnlyVHDX makes a dynamic VHDX with qemu-img, writes 3 MiB of 0x5A at
// 1 MiB into it with qemu-io, and returns its path in a read-only view
// (readOnlyView) with the flat disk qemu wrote: the model the tests update
// with their own writes.
func readOnlyVHDX(t *testing.T) (string, []byte) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed (Debian package qemu-utils)")
	}
	dir := tempDir(t)
	img := filepath.Join(dir, "base.vhdx")
	mustRun(t, "qemu-img", "create", "-q", "-f", "vhdx", img, strconv.Itoa(qemuVHDXSize))
	mustRun(t, "qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 1M 3M", img)
	model := make([]byte, qemuVHDXSize)
	copy(model[1<<20:4<<20], bytes.Repeat([]byte{0x5A}, 3<<20))
	return readOnlyView(t, dir, "base.vhdx"), model
}

// writeModel writes p at off through the mounted file and into model.
func writeModel(t *testing.T, file string, model, p []byte, off int64) {
	t.Helper()
	writeAt(t, file, p, off)
	copy(model[off:], p)
}

// checkFlat fails the test unless the whole of file reads as want.
func checkFlat(t *testing.T, what, file string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the model (%d bytes read, %d expected); first at %d", what, diffCount(got, want), len(got), len(want), firstDiff(got, want))
	}
}

func diffCount(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// vhdxPeers reads the chain of child (a VHDX whose parent is parent) with
// 7-Zip and libvhdi's vhdimount, and compares both with want. The peers do
// not resolve the locator as [MS-VHDX] says: libvhdi looks for the parent's
// base name in the child's directory, and 7-Zip on Linux opens
// relative_path's Windows text as a file name. Symbolic links by those
// names in the child's directory, pointing to parent, let them find it.
func vhdxPeers(t *testing.T, child, parent, relWin string, want []byte) {
	t.Helper()
	dir := filepath.Dir(child)
	for _, name := range []string{filepath.Base(parent), relWin} {
		link := filepath.Join(dir, name)
		if err := os.Symlink(parent, link); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(link)
	}
	t.Run("7zz", func(t *testing.T) {
		_, err := exec.LookPath("7zz")
		testenv.Require(t, err == nil, "7zz is not installed (Debian package 7zip)")
		cmd := exec.Command("7zz", "e", "-tvhdx", "-so", filepath.Base(child))
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		got, err := cmd.Output()
		if err != nil {
			t.Fatalf("7zz %s: %v\n%s", child, err, stderr.String())
		}
		if !bytes.Equal(got, want) {
			t.Errorf("7-Zip reads %d bytes differing from the model (%d bytes read, %d expected); first at %d", diffCount(got, want), len(got), len(want), firstDiff(got, want))
		}
	})
	t.Run("vhdimount", func(t *testing.T) {
		_, err := exec.LookPath("vhdimount")
		testenv.Require(t, err == nil, "vhdimount is not installed (libvhdi-utils)")
		mnt := tempDir(t)
		mustRun(t, "vhdimount", child, mnt)
		defer func() {
			if _, ok := mountedAt(mnt); ok {
				if err := unmountRetry(mnt); err != nil {
					t.Errorf("umount %s: %v", mnt, err)
					syscall.Unmount(mnt, syscall.MNT_DETACH)
				}
			}
		}()
		// vhdimount shows the chain's root as vhdi1 and the child as vhdi2.
		f, err := os.Open(filepath.Join(mnt, "vhdi2"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("vhdimount reads %d bytes differing from the model (%d bytes read, %d expected); first at %d", diffCount(got, want), len(got), len(want), firstDiff(got, want))
		}
	})
}

// TestOverlayMountVHDX: --overlay over a read-only VHDX that qemu wrote
// creates a VHDX differencing child and mounts it read-write; the mount
// reads qemu's data, the writes (unaligned, across qemu's data and a block
// boundary) land in the child and show again at the next overlay mount;
// the image stays byte-identical; our reader, 7-Zip and libvhdi read the
// child's chain as the model. A VHD child of a VHDX, and an existing VHDX
// overlay of another image, are refused untouched.
func TestOverlayMountVHDX(t *testing.T) {
	requireMount(t)
	img, model := readOnlyVHDX(t)
	sum, _ := sha256File(t, img)
	child := filepath.Join(tempDir(t), "overlay.avhdx")

	m := mountImage(t, img, "--overlay", child)
	checkFlat(t, "disk.raw of a new overlay", m.file, model)
	writeModel(t, m.file, model, bytes.Repeat([]byte("overlay!"), 700), 1000)
	writeModel(t, m.file, model, bytes.Repeat([]byte{0xC3}, 6000), 4<<20-3000)
	writeModel(t, m.file, model, bytes.Repeat([]byte("block edge"), 1000), 8<<20-5000)
	writeModel(t, m.file, model, bytes.Repeat([]byte{0x11}, 1<<20), qemuVHDXSize-(1<<20))
	m.unmount(t)
	if s, _ := sha256File(t, img); s != sum {
		t.Fatal("the image changed under an overlay mount")
	}
	checkClean(t, child)
	out := mustRun(t, bin("vhd"), "info", child)
	if !strings.Contains(out, "differencing") || !strings.Contains(out, "layer 1: "+img) {
		t.Errorf("vhd info of the overlay does not show a differencing VHDX over the image:\n%s", out)
	}
	if b, err := os.ReadFile(child); err != nil || !bytes.HasPrefix(b, []byte("vhdxfile")) {
		t.Errorf("the overlay is not a VHDX file (%v)", err)
	}

	m = mountImage(t, img, "-o", "overlay="+child) // existing: reused
	checkFlat(t, "disk.raw of the overlay mounted again", m.file, model)
	m.unmount(t)
	if s, _ := sha256File(t, img); s != sum {
		t.Fatal("the image changed under an overlay mount")
	}
	if got := flatView(t, child); !bytes.Equal(got, model) {
		t.Error("our reader does not read the overlay's chain as the model")
	}
	rel, err := filepath.Rel(filepath.Dir(child), img)
	if err != nil {
		t.Fatal(err)
	}
	vhdxPeers(t, child, img, strings.ReplaceAll(rel, "/", `\`), model)

	// A VHD overlay of a VHDX is refused, and nothing is created.
	dir := tempDir(t)
	vhdChild := filepath.Join(tempDir(t), "c.vhd")
	out, code := run(t, bin("vhdmount"), "--overlay", vhdChild, img, dir)
	if code != 1 || !strings.Contains(out, "a VHD cannot have a VHDX parent") {
		t.Errorf("VHD overlay of a VHDX: exit %d: %s", code, out)
	}
	if _, err := os.Lstat(vhdChild); !os.IsNotExist(err) {
		t.Errorf("the refused VHD overlay exists (%v)", err)
	}
	// An existing VHDX overlay of another VHDX is refused, and left as it was.
	other := filepath.Join(tempDir(t), "other.vhdx")
	mustRun(t, "qemu-img", "create", "-q", "-f", "vhdx", other, strconv.Itoa(qemuVHDXSize))
	wrong := filepath.Join(filepath.Dir(other), "wrong.avhdx")
	mustRun(t, bin("vhd"), "create", "--parent", other, wrong)
	ws, _ := sha256File(t, wrong)
	out, code = run(t, bin("vhdmount"), "--overlay", wrong, img, dir)
	if code != 1 || !strings.Contains(out, "is an overlay of "+other) {
		t.Errorf("overlay of another image: exit %d: %s", code, out)
	}
	if _, ok := mountedAt(dir); ok {
		t.Error("mounted anyway")
	}
	if s, _ := sha256File(t, wrong); s != ws {
		t.Error("the refused overlay file changed")
	}
}

// TestOverlayVHDXChildOfVHD: a VHDX overlay of a VHD image is refused, new
// (by its name) or existing (by its content), and nothing is created or
// changed.
func TestOverlayVHDXChildOfVHD(t *testing.T) {
	requireMount(t)
	img := readOnlyCopy(t)
	dir := tempDir(t)
	newChild := filepath.Join(tempDir(t), "c.avhdx")
	out, code := run(t, bin("vhdmount"), "--overlay", newChild, img, dir)
	if code != 1 || !strings.Contains(out, "a VHDX child cannot have a VHD parent") {
		t.Errorf("new VHDX overlay of a VHD: exit %d: %s", code, out)
	}
	if _, err := os.Lstat(newChild); !os.IsNotExist(err) {
		t.Errorf("the refused VHDX overlay exists (%v)", err)
	}
	// An existing VHDX (named .vhd, so only its content tells).
	vhdxChild := filepath.Join(tempDir(t), "c.vhd")
	base := filepath.Join(filepath.Dir(vhdxChild), "b.vhdx")
	mustRun(t, bin("vhd"), "create", base, "8M")
	mustRun(t, bin("vhd"), "create", "--format", "vhdx", "--parent", base, filepath.Join(filepath.Dir(vhdxChild), "c.avhdx"))
	if err := os.Rename(filepath.Join(filepath.Dir(vhdxChild), "c.avhdx"), vhdxChild); err != nil {
		t.Fatal(err)
	}
	cs, _ := sha256File(t, vhdxChild)
	out, code = run(t, bin("vhdmount"), "--overlay", vhdxChild, img, dir)
	if code != 1 || !strings.Contains(out, "a VHDX child cannot have a VHD parent") {
		t.Errorf("existing VHDX overlay of a VHD: exit %d: %s", code, out)
	}
	if s, _ := sha256File(t, vhdxChild); s != cs {
		t.Error("the refused overlay file changed")
	}
	if _, ok := mountedAt(dir); ok {
		t.Error("mounted anyway")
	}
}

// TestSnapshotMountVHDX: --snapshot over a read-only VHDX that qemu wrote:
// the temporary child is an .avhdx named after the server's pid; writes
// read back; at unmount the child and its lock are gone and the image is
// byte-identical; a new snapshot shows the image as qemu wrote it; a
// snapshot server killed with SIGKILL leaves its .avhdx, which the next
// snapshot mount removes.
func TestSnapshotMountVHDX(t *testing.T) {
	requireMount(t)
	img, model := readOnlyVHDX(t)
	orig := append([]byte(nil), model...)
	sum, _ := sha256File(t, img)
	m := mountImage(t, img, "--snapshot")
	checkFlat(t, "disk.raw of a snapshot", m.file, model)
	writeModel(t, m.file, model, bytes.Repeat([]byte{0xA5}, 5000), 1<<20-2000)
	writeModel(t, m.file, model, bytes.Repeat([]byte("snap"), 3000), 20<<20+7)
	checkFlat(t, "disk.raw of a snapshot after writes", m.file, model)
	files := snapshotFiles(t)
	pid := strconv.Itoa(m.cmd.Process.Pid)
	var child string
	for _, f := range files {
		if strings.HasSuffix(f, ".avhdx") {
			child = filepath.Join(runDir, "vhdmount-snapshots-0", f)
		}
	}
	if len(files) != 2 || !strings.HasPrefix(files[0], "snapshot-"+pid+"-") || child == "" {
		t.Errorf("snapshot directory holds %v; want the .avhdx child and lock of server %s", files, pid)
	}
	if mi, _ := mountedAt(m.dir); child != "" && mi.Source != child {
		t.Errorf("mount source %q, want the snapshot child %s", mi.Source, child)
	}
	if child != "" {
		if b, err := os.ReadFile(child); err != nil || !bytes.HasPrefix(b, []byte("vhdxfile")) {
			t.Errorf("the snapshot child is not a VHDX file (%v)", err)
		}
	}
	m.unmount(t)
	if left := snapshotFiles(t); len(left) != 0 {
		t.Errorf("left after unmount: %v", left)
	}
	if s, _ := sha256File(t, img); s != sum {
		t.Fatal("the image changed under a snapshot mount")
	}

	// A killed server's child survives it, and the next snapshot removes it.
	dir := tempDir(t)
	if out, code := run(t, bin("vhdmount"), "--snapshot", img, dir); code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	srv := adoptDaemon(t, dir)
	writeAt(t, filepath.Join(dir, "disk.raw"), bytes.Repeat([]byte{1}, 8192), 1<<20)
	stale := snapshotFiles(t)
	if len(stale) != 2 {
		t.Fatalf("snapshot directory holds %v", stale)
	}
	syscall.Kill(srv.pid, syscall.SIGKILL)
	waitGone(t, srv.pid)
	syscall.Unmount(dir, syscall.MNT_DETACH) // the dead server's mount
	if now := snapshotFiles(t); len(now) != 2 {
		t.Fatalf("after SIGKILL the snapshot directory holds %v; want the dead server's child still there", now)
	}
	m = mountImage(t, img, "-o", "snapshot")
	checkFlat(t, "disk.raw of a new snapshot", m.file, orig)
	for _, f := range snapshotFiles(t) {
		if f == stale[0] || f == stale[1] {
			t.Errorf("the dead server's %s survived the next snapshot mount", f)
		}
	}
	m.unmount(t)
	if left := snapshotFiles(t); len(left) != 0 {
		t.Errorf("left after unmount: %v", left)
	}
	if s, _ := sha256File(t, img); s != sum {
		t.Fatal("the image changed under a snapshot mount")
	}
}
