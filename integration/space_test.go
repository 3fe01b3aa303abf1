//go:build linux

package integration

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// hostBytes returns what the host filesystem stores for path (st_blocks).
func hostBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// infoAllocated returns `vhd info --json`'s allocated_bytes.
func infoAllocated(t *testing.T, img string) int64 {
	t.Helper()
	var info struct {
		AllocatedBytes int64 `json:"allocated_bytes"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin("vhd"), "info", "--json", img)), &info); err != nil {
		t.Fatal(err)
	}
	return info.AllocatedBytes
}

// writeRandomFile writes n random bytes to path and syncs it.
func writeRandomFile(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestTrimShrinksImage: ext4 on disk.raw of a dynamic and of a fixed image;
// a 96 MiB file written then deleted; fstrim (or the discard mount option)
// passes the freed ranges through the loop device to disk.raw as fallocate
// punch-holes, and the image file gives the space back: its st_blocks drop
// and so does `vhd info`'s allocated count. The
// filesystem stays intact (e2fsck), vhd check is clean, and qemu-img reads
// the same bytes as we do. Then vhd compact shrinks the dynamic image's file
// to about what stays allocated, without changing what it reads.
func TestTrimShrinksImage(t *testing.T) {
	requireMount(t)
	const big = 96 << 20
	for _, c := range []struct{ name, typ, how string }{
		{"dynamic fstrim", "dynamic", "fstrim"},
		{"dynamic mount -o discard", "dynamic", "discard"},
		{"fixed fstrim", "fixed", "fstrim"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := tempDir(t)
			img := filepath.Join(dir, "disk.vhd")
			mustRun(t, bin("vhd"), "create", "-t", c.typ, img, "256M")
			if c.typ == "fixed" {
				// A sparse fixed image: punch its data area so the test starts
				// from a host file that stores little.
				f, err := os.OpenFile(img, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				syscall.Fallocate(int(f.Fd()), 0x3, 0, 256<<20)
				f.Close()
			}
			m := mountImage(t, img)
			mustRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", m.file)
			opts := "rw"
			if c.how == "discard" {
				opts = "rw,discard"
			}
			fsdir := loopMount(t, m.file, opts)
			writeRandomFile(t, filepath.Join(fsdir, "big.bin"), big, 5)
			loopUnmount(t, fsdir)
			m.unmount(t)
			hostBefore, allocBefore := hostBytes(t, img), infoAllocated(t, img)

			m = mountImage(t, img)
			fsdir = loopMount(t, m.file, opts)
			if err := os.Remove(filepath.Join(fsdir, "big.bin")); err != nil {
				t.Fatal(err)
			}
			mustRun(t, "sync", "-f", fsdir)
			if c.how == "fstrim" {
				t.Logf("fstrim: %s", mustRun(t, "fstrim", "-v", fsdir))
			}
			loopUnmount(t, fsdir)
			mustRun(t, "e2fsck", "-fn", m.file)
			m.unmount(t)
			hostAfter, allocAfter := hostBytes(t, img), infoAllocated(t, img)
			t.Logf("%s: host file %d -> %d bytes; vhd info allocated %d -> %d", c.name, hostBefore, hostAfter, allocBefore, allocAfter)
			want := int64(big * 9 / 10)
			if c.how == "discard" {
				// ext4's online discard trims the extents its journal commits
				// free, in the background: less is done by unmount than with
				// fstrim, but some of it must have reached the image. How much
				// varies with timing (6 to 20 MiB of the 96 MiB were seen, less
				// on a loaded machine), so one whole 2 MiB block is the bar.
				want = 2 << 20
			}
			if hostBefore-hostAfter < want {
				t.Errorf("the image file stores %d bytes before the trim and %d after; want at least %d fewer", hostBefore, hostAfter, want)
			}
			if allocBefore-allocAfter < want {
				t.Errorf("vhd info: allocated %d before the trim and %d after; want at least %d fewer", allocBefore, allocAfter, want)
			}
			checkClean(t, img)
			before := flatView(t, img)
			if !bytes.Equal(peerView(t, img, true), before) {
				t.Error("qemu-img reads different bytes")
			}
			if c.typ != "dynamic" {
				return
			}
			// vhd compact closes the gaps the trim left: the file shrinks
			// to about what is allocated, and reads the same.
			fi0, _ := os.Stat(img)
			t.Logf("vhd compact: %s", mustRun(t, bin("vhd"), "compact", img))
			fi1, _ := os.Stat(img)
			if fi1.Size() > allocAfter+8<<20 || fi1.Size() >= fi0.Size() {
				t.Errorf("after vhd compact the file is %d bytes (was %d; %d allocated)", fi1.Size(), fi0.Size(), allocAfter)
			}
			if h := hostBytes(t, img); h > hostAfter {
				t.Errorf("after vhd compact the image stores %d bytes, more than the %d before", h, hostAfter)
			}
			checkClean(t, img)
			if !bytes.Equal(flatView(t, img), before) {
				t.Error("vhd compact changed what the disk reads")
			}
			m = mountImage(t, img, "--ro")
			mustRun(t, "e2fsck", "-fn", m.file)
			m.unmount(t)
		})
	}
}

// TestSparseFixedImage: a sparse fixed image (data in two places) shows its
// holes through the mount: SEEK_DATA/SEEK_HOLE, st_blocks, cp --sparse
// makes a sparse copy with the same bytes, and vhd convert -O dynamic
// allocates only the blocks with data.
func TestSparseFixedImage(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	img := filepath.Join(dir, "fixed.vhd")
	const mb = 1 << 20
	mustRun(t, bin("vhd"), "create", "-t", "fixed", img, "64M")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{1}, 8192), 6*mb)
	f.WriteAt(bytes.Repeat([]byte{2}, 4096), 40*mb+4096)
	f.Close()
	m := mountImage(t, img, "--ro")
	g, err := os.Open(m.file)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{{0, 3, 6 * mb}, {6 * mb, 4, 6*mb + 8192}, {7 * mb, 3, 40*mb + 4096}, {40*mb + 4096, 4, 40*mb + 8192}, {41 * mb, 4, 41 * mb}} {
		got, err := g.Seek(c.off, c.whence)
		if err != nil || got != c.want {
			t.Errorf("seek(%d, %d) = %d, %v; want %d", c.off, c.whence, got, err, c.want)
		}
	}
	if _, err := g.Seek(41*mb, 3); !isENXIO(err) {
		t.Errorf("SEEK_DATA past the last data: %v, want ENXIO", err)
	}
	if b := hostBytes(t, m.file); b != 12288 {
		t.Errorf("disk.raw st_blocks say %d bytes, want 12288", b)
	}
	out := filepath.Join(dir, "copy.raw")
	mustRun(t, "cp", "--sparse=always", m.file, out)
	if b := hostBytes(t, out); b > 64<<10 {
		t.Errorf("cp --sparse copy stores %d bytes; want a sparse copy", b)
	}
	g.Close()
	a, _ := sha256File(t, out)
	want := make([]byte, 64*mb)
	copy(want[6*mb:], bytes.Repeat([]byte{1}, 8192))
	copy(want[40*mb+4096:], bytes.Repeat([]byte{2}, 4096))
	wantFile := filepath.Join(dir, "want.raw")
	os.WriteFile(wantFile, want, 0o644)
	if b, _ := sha256File(t, wantFile); a != b {
		t.Error("cp of disk.raw differs from what was written")
	}
	m.unmount(t)
	dyn := filepath.Join(dir, "dyn.vhd")
	mustRun(t, bin("vhd"), "convert", "-O", "dynamic", img, dyn)
	if got := infoAllocated(t, dyn); got != 4*mb {
		t.Errorf("converted to dynamic: %d bytes allocated, want two 2 MiB blocks", got)
	}
	if got := infoAllocated(t, img); got != 12288 {
		t.Errorf("vhd info of the sparse fixed image: %d bytes allocated, want 12288", got)
	}
	if !bytes.Equal(flatView(t, dyn), want) {
		t.Error("the converted image reads something else")
	}
}
