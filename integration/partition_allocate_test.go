//go:build linux

package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPartitionFallocate: fallocate(1) on the partition files of a mounted
// dynamic VHD passes through to the disk as on disk.raw. A punch hole
// inside p2 and one in p1 running past its end (KEEP_SIZE: clipped at p1's
// end) make exactly those ranges read as zeros, checked against the bytes
// qemu-img read before with the ranges cleared, both through disk.raw in
// the same mount (its kernel cache dropped) and by qemu-img after unmount;
// the whole 2 MiB blocks inside a punched range are freed (vhd info and
// the image file's st_blocks drop). A zero range growing past p1's end is
// refused and changes nothing; on a read-only mount fallocate fails.
func TestPartitionFallocate(t *testing.T) {
	requireMount(t)
	requireTools(t, "sfdisk", "fallocate", "qemu-img")
	dir := tempDir(t)
	img := partitionedImage(t, dir) // p1: [1, 17) MiB, p2: [17, 64) MiB of the disk
	const mib = 1 << 20
	const p1Start, p1Size, p2Start = 1 * mib, 16 * mib, 17 * mib

	// Random bytes everywhere past the first MiB (the table stays).
	m := mountImage(t, img)
	rnd := filepath.Join(dir, "rnd")
	writeRandomFile(t, rnd, 63*mib, 11)
	data, err := os.ReadFile(rnd)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.unmount(t)
	model := peerView(t, img, true)
	if len(model) != 64*mib || !bytes.Equal(model[mib:], data) {
		t.Fatalf("qemu-img reads %d bytes, not what was written", len(model))
	}
	hostBefore, allocBefore := hostBytes(t, img), infoAllocated(t, img)

	m = mountImage(t, img)
	raw, err := os.ReadFile(m.file) // disk.raw now in the kernel's cache
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, model) {
		t.Fatal("disk.raw differs from qemu-img before any fallocate")
	}
	p1, p2 := filepath.Join(m.dir, "p1"), filepath.Join(m.dir, "p2")
	punch := func(file string, off, n int64) {
		t.Helper()
		mustRun(t, "fallocate", "--punch-hole", "--offset", fmt.Sprint(off), "--length", fmt.Sprint(n), file)
	}
	// p2 [4 MiB + 512, 12 MiB + 4096): disk [21 MiB + 512, 29 MiB + 4096),
	// holding the whole blocks [22, 28) MiB.
	punch(p2, 4*mib+512, 8*mib+4096-512)
	clear(model[p2Start+4*mib+512 : p2Start+12*mib+4096])
	// p1 [14, 18) MiB is clipped at its end, 16 MiB: disk [15, 17) MiB;
	// p2's first bytes, right after, stay.
	punch(p1, 14*mib, 4*mib)
	clear(model[p1Start+14*mib : p1Start+p1Size])
	// Without KEEP_SIZE a range past the end would grow p1: refused.
	if out, code := run(t, "fallocate", "--zero-range", "--offset", fmt.Sprint(10*mib), "--length", fmt.Sprint(8*mib), p1); code == 0 {
		t.Errorf("fallocate --zero-range past the end of p1 succeeded:\n%s", out)
	}
	raw, err = os.ReadFile(m.file)
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(raw, model); i >= 0 {
		t.Errorf("disk.raw in the same mount differs from the model at %d", i)
	}
	m.unmount(t)
	if i := firstDiff(peerView(t, img, true), model); i >= 0 {
		t.Errorf("qemu-img after unmount differs from the model at %d", i)
	}
	checkClean(t, img)
	hostAfter, allocAfter := hostBytes(t, img), infoAllocated(t, img)
	t.Logf("host file %d -> %d bytes; vhd info allocated %d -> %d", hostBefore, hostAfter, allocBefore, allocAfter)
	if allocBefore-allocAfter < 6*mib {
		t.Errorf("vhd info: allocated %d before and %d after; want at least 6 MiB (three whole blocks) fewer", allocBefore, allocAfter)
	}
	if hostBefore-hostAfter < 6*mib {
		t.Errorf("the image file stores %d bytes before and %d after; want at least 6 MiB fewer", hostBefore, hostAfter)
	}

	m = mountImage(t, img, "--ro")
	if out, code := run(t, "fallocate", "--punch-hole", "--offset", "0", "--length", "4096", filepath.Join(m.dir, "p2")); code == 0 || !strings.Contains(strings.ToLower(out), "read-only") {
		t.Errorf("fallocate on p2 of a read-only mount: exit %d, %q; want a read-only failure", code, out)
	}
	m.unmount(t)
}

// firstDiff returns the first offset where a and b differ (a length
// difference counts), or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
