//go:build linux

package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestTrimShrinksVHDX: ext4 on disk.raw of a dynamic VHDX that qemu-img
// created (1 MiB blocks); a 96 MiB file written then deleted; fstrim passes
// the freed ranges through the loop device to disk.raw as fallocate
// punch-holes, and the image file gives the space back: its st_blocks drop
// by at least 90% of the file, and so does `vhd info`'s allocated count.
// The filesystem stays intact (e2fsck), vhd check and qemu-img check are
// clean, and qemu-img reads the same bytes as we do.
func TestTrimShrinksVHDX(t *testing.T) {
	requireMount(t)
	const big = 96 << 20
	dir := tempDir(t)
	img := filepath.Join(dir, "disk.vhdx")
	mustRun(t, "qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", img, "256M")
	m := mountImage(t, img)
	mustRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", m.file)
	fsdir := loopMount(t, m.file, "rw")
	writeRandomFile(t, filepath.Join(fsdir, "big.bin"), big, 7)
	loopUnmount(t, fsdir)
	m.unmount(t)
	hostBefore, allocBefore := hostBytes(t, img), infoAllocated(t, img)

	m = mountImage(t, img)
	fsdir = loopMount(t, m.file, "rw")
	if err := os.Remove(filepath.Join(fsdir, "big.bin")); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "sync", "-f", fsdir)
	t.Logf("fstrim: %s", mustRun(t, "fstrim", "-v", fsdir))
	loopUnmount(t, fsdir)
	mustRun(t, "e2fsck", "-fn", m.file)
	m.unmount(t)
	hostAfter, allocAfter := hostBytes(t, img), infoAllocated(t, img)
	t.Logf("host file %d -> %d bytes; vhd info allocated %d -> %d", hostBefore, hostAfter, allocBefore, allocAfter)
	want := int64(big * 9 / 10)
	if hostBefore-hostAfter < want {
		t.Errorf("the image file stores %d bytes before the trim and %d after; want at least %d fewer", hostBefore, hostAfter, want)
	}
	if allocBefore-allocAfter < want {
		t.Errorf("vhd info: allocated %d before the trim and %d after; want at least %d fewer", allocBefore, allocAfter, want)
	}
	checkClean(t, img)
	if out, code := run(t, "qemu-img", "check", "-f", "vhdx", img); code != 0 {
		t.Errorf("qemu-img check: exit %d\n%s", code, out)
	}
	if !bytes.Equal(qemuVHDXView(t, img), flatView(t, img)) {
		t.Error("qemu-img reads different bytes")
	}
	// The filesystem still mounts and reads clean through the mount.
	m = mountImage(t, img)
	mustRun(t, "e2fsck", "-fn", m.file)
	m.unmount(t)
}
