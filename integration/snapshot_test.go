//go:build linux

package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// readOnlyCopy puts a copy of the corpus's ext2.vhd in a directory that is
// then bind-mounted read-only, so even root cannot write it (EROFS), and
// returns the image's path in the read-only view.
func readOnlyCopy(t *testing.T) string {
	t.Helper()
	src := corpusImage(t, "real/dfvfs/ext2.vhd")
	dir := tempDir(t)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base.vhd"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return readOnlyView(t, dir, "base.vhd")
}

// readOnlyView bind-mounts dir read-only at a new directory, so even root
// cannot write it (EROFS), and returns the path of dir's file name there.
func readOnlyView(t *testing.T, dir, name string) string {
	t.Helper()
	ro := tempDir(t)
	mustRun(t, "mount", "--bind", dir, ro)
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
	mustRun(t, "mount", "-o", "remount,ro,bind", ro)
	img := filepath.Join(ro, name)
	if f, err := os.OpenFile(img, os.O_RDWR, 0); err == nil {
		f.Close()
		t.Fatalf("%s is writable through the read-only bind mount", img)
	}
	return img
}

// writeAt writes p at off into file and reads it back.
func writeAt(t *testing.T, file string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read-back at %d: %v", off, err)
	}
}

func readAt(t *testing.T, file string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshotFiles lists the snapshot children and locks of this run's user.
func snapshotFiles(t *testing.T) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(runDir, "vhdmount-snapshots-0"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestOverlayMount: --overlay creates a child of a read-only image and mounts
// it read-write; what is written survives in the child and shows again when
// the same overlay is mounted again; the image stays byte-identical; an
// overlay of another image is refused untouched.
func TestOverlayMount(t *testing.T) {
	requireMount(t)
	img := readOnlyCopy(t)
	sum, _ := sha256File(t, img)
	child := filepath.Join(tempDir(t), "overlay.vhd")
	pattern := bytes.Repeat([]byte("overlay!"), 700) // 5600 bytes: unaligned, across sectors

	m := mountImage(t, img, "--overlay", child)
	before := readAt(t, m.file, 8192, 0)
	writeAt(t, m.file, pattern, 1000)
	m.unmount(t)
	if s, _ := sha256File(t, img); s != sum {
		t.Fatal("the image changed under an overlay mount")
	}
	checkClean(t, child)
	out := mustRun(t, bin("vhd"), "info", child)
	if !strings.Contains(out, img) {
		t.Errorf("vhd info of the overlay does not name the image as its parent:\n%s", out)
	}

	m = mountImage(t, img, "-o", "overlay="+child) // existing: reused
	want := append([]byte(nil), before...)
	copy(want[1000:], pattern)
	if got := readAt(t, m.file, 8192, 0); !bytes.Equal(got, want) {
		t.Error("the second overlay mount does not show what the first wrote")
	}
	m.unmount(t)
	plain := mountImage(t, img, "--ro")
	checkExt2Sum(t, plain.dir) // the image alone still reads as the corpus says
	plain.unmount(t)

	// An overlay of another image is refused, and left as it was.
	other := filepath.Join(tempDir(t), "other.vhd")
	mustRun(t, bin("vhd"), "create", other, "4M")
	wrong := filepath.Join(filepath.Dir(other), "wrong.vhd")
	mustRun(t, bin("vhd"), "create", "--parent", other, wrong)
	ws, _ := sha256File(t, wrong)
	dir := tempDir(t)
	out, code := run(t, bin("vhdmount"), "--overlay", wrong, img, dir)
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

// TestSnapshotMount: --snapshot mounts a read-only image read-write; writes
// read back, then vanish with the mount: the temporary child (named after
// the server's pid) is removed at unmount, the image is byte-identical, and
// a new snapshot shows the image again.
func TestSnapshotMount(t *testing.T) {
	requireMount(t)
	img := readOnlyCopy(t)
	sum, _ := sha256File(t, img)
	m := mountImage(t, img, "--snapshot")
	orig := readAt(t, m.file, 4096, 0)
	writeAt(t, m.file, bytes.Repeat([]byte{0xA5}, 4096), 0)
	files := snapshotFiles(t)
	pid := m.cmd.Process.Pid
	if len(files) != 2 || !strings.HasPrefix(files[0], "snapshot-"+strconv.Itoa(pid)+"-") {
		t.Errorf("snapshot directory holds %v; want the child and lock of server %d", files, pid)
	}
	if mi, _ := mountedAt(m.dir); !strings.HasPrefix(mi.Source, filepath.Join(runDir, "vhdmount-snapshots-0", "snapshot-")) {
		t.Errorf("mount source %q, want the snapshot child", mi.Source)
	}
	m.unmount(t)
	if left := snapshotFiles(t); len(left) != 0 {
		t.Errorf("left after unmount: %v", left)
	}
	if s, _ := sha256File(t, img); s != sum {
		t.Fatal("the image changed under a snapshot mount")
	}
	m = mountImage(t, img, "-o", "snapshot")
	if got := readAt(t, m.file, 4096, 0); !bytes.Equal(got, orig) {
		t.Error("a new snapshot shows the previous snapshot's writes")
	}
	m.cmd.Process.Signal(syscall.SIGTERM) // a signal ends the mount: the child goes too
	select {
	case err := <-m.done:
		m.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, m.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	if left := snapshotFiles(t); len(left) != 0 {
		t.Errorf("left after SIGTERM: %v", left)
	}
}

// TestSnapshotKilledServer: a detached snapshot server killed with SIGKILL
// leaves its child; the next snapshot mount removes it (its lock is free)
// and leaves the live one's alone.
func TestSnapshotKilledServer(t *testing.T) {
	requireMount(t)
	img := readOnlyCopy(t)
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
	m := mountImage(t, img, "--snapshot")
	now := snapshotFiles(t)
	for _, f := range now {
		if f == stale[0] || f == stale[1] {
			t.Errorf("the dead server's %s survived the next snapshot mount", f)
		}
	}
	if len(now) != 2 {
		t.Errorf("snapshot directory holds %v; want only the live server's child and lock", now)
	}
	// A second live snapshot does not remove the first one's child.
	m2 := mountImage(t, img, "--snapshot")
	if got := snapshotFiles(t); len(got) != 4 {
		t.Errorf("with two live snapshots the directory holds %v", got)
	}
	m2.unmount(t)
	m.unmount(t)
	if left := snapshotFiles(t); len(left) != 0 {
		t.Errorf("left after unmount: %v", left)
	}
}

// TestSnapshotMountHelper: `mount -t fuse.vhdmount IMAGE DIR -o snapshot` and
// `-o overlay=CHILD`, as fstab lines give them, over a VHD and a VHDX.
func TestSnapshotMountHelper(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("mount.fuse3")
	testenv.Require(t, err == nil, "mount.fuse3 not installed (Debian package fuse3)")
	const installed = "/usr/local/bin/vhdmount"
	if _, err := os.Lstat(installed); err == nil {
		t.Logf("using the already installed %s", installed)
	} else {
		if err := os.Symlink(bin("vhdmount"), installed); err != nil {
			testenv.Require(t, false, "cannot install vhdmount into /usr/local/bin: "+err.Error())
		}
		t.Cleanup(func() { os.Remove(installed) })
	}
	t.Run("vhd", func(t *testing.T) { mountHelperOverlays(t, readOnlyCopy(t), "c.vhd") })
	t.Run("vhdx", func(t *testing.T) {
		img, _ := readOnlyVHDX(t)
		mountHelperOverlays(t, img, "c.avhdx")
	})
}

// mountHelperOverlays mounts a snapshot of img and an overlay named
// childName with mount -t fuse.vhdmount, writes through each, and checks the
// snapshot child is gone, the overlay checks clean, and img is unchanged.
func mountHelperOverlays(t *testing.T, img, childName string) {
	sum, _ := sha256File(t, img)
	child := filepath.Join(tempDir(t), childName)
	for _, opt := range []string{"snapshot", "overlay=" + child} {
		dir := tempDir(t)
		mustRun(t, "mount", "-t", "fuse.vhdmount", img, dir, "-o", "nofail,"+opt)
		srv := adoptDaemon(t, dir)
		mi, _ := mountedAt(dir)
		if strings.HasPrefix(mi.Options, "ro") {
			t.Errorf("%s: mounted read-only (%s)", opt, mi.Options)
		}
		source := mi.Source
		writeAt(t, filepath.Join(dir, "disk.raw"), []byte("written through mount -t"), 4096)
		srv.unmount(t)
		if opt == "snapshot" {
			if _, err := os.Stat(source); !os.IsNotExist(err) {
				t.Errorf("snapshot child %s still there after unmount (%v)", source, err)
			}
		} else if source != child {
			t.Errorf("overlay mount source %q, want %q", source, child)
		} else {
			checkClean(t, child)
			b, err := os.ReadFile(child)
			if isVHDX := bytes.HasPrefix(b, []byte("vhdxfile")); err != nil || isVHDX != strings.HasSuffix(childName, ".avhdx") {
				t.Errorf("overlay %s: VHDX %v (%v)", child, isVHDX, err)
			}
		}
	}
	if s, _ := sha256File(t, img); s != sum {
		t.Error("the image changed")
	}
}

// TestOverlayOverChain: an overlay and a snapshot over a differencing IMAGE
// leave IMAGE and its parent byte-identical, and the overlay's chain (three
// images) reads what was written over the base's data.
func TestOverlayOverChain(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	raw := filepath.Join(dir, "base.raw")
	data := bytes.Repeat([]byte("base data, "), 800000) // 8.8 MB, not block-aligned
	data = data[:8<<20]
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	base, mid := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "mid.vhd")
	mustRun(t, bin("vhd"), "convert", "-O", "dynamic", raw, base)
	mustRun(t, bin("vhd"), "create", "--parent", base, mid)
	sums := map[string]string{}
	for _, p := range []string{base, mid} {
		sums[p], _ = sha256File(t, p)
	}
	child := filepath.Join(tempDir(t), "top.vhd")
	for _, args := range [][]string{{"--snapshot"}, {"--overlay", child}} {
		m := mountImage(t, mid, args...)
		if got := readAt(t, m.file, 4096, 1<<20); !bytes.Equal(got, data[1<<20:1<<20+4096]) {
			t.Errorf("%v: disk.raw does not show the base's data", args)
		}
		writeAt(t, m.file, bytes.Repeat([]byte{0x5A}, 3000), 1<<20+100)
		m.unmount(t)
	}
	for p, s := range sums {
		if now, _ := sha256File(t, p); now != s {
			t.Errorf("%s changed", p)
		}
	}
	checkClean(t, child)
	want := append([]byte(nil), data...)
	copy(want[1<<20+100:], bytes.Repeat([]byte{0x5A}, 3000))
	if got := flatView(t, child); !bytes.Equal(got, want) {
		t.Error("the overlay's chain does not read the base with the write over it")
	}
}
