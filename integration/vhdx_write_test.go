//go:build linux

package integration

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// qemuVHDXView reads a VHDX through qemu-img (fixed and dynamic only: qemu
// refuses differencing VHDX).
func qemuVHDXView(t *testing.T, path string) []byte {
	t.Helper()
	out := filepath.Join(tempDir(t), "q.raw")
	mustRun(t, "qemu-img", "convert", "-f", "vhdx", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sevenZipVHDXView reads a VHDX, with its parents beside it, through 7-Zip.
func sevenZipVHDXView(t *testing.T, path string) []byte {
	t.Helper()
	cmd := exec.Command("7zz", "e", "-tvhdx", "-so", path)
	cmd.Dir = filepath.Dir(path)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("7zz %s: %v", path, err)
	}
	return b
}

// libvhdiView reads an image, with its parents, through libvhdi's vhdimount:
// the top of a chain of n images is vhdi<n>.
func libvhdiView(t *testing.T, path string, depth int) []byte {
	t.Helper()
	_, err := exec.LookPath("vhdimount")
	testenv.Require(t, err == nil, "vhdimount is not installed (libvhdi-utils)")
	mnt := tempDir(t)
	mustRun(t, "vhdimount", path, mnt)
	defer func() {
		if _, ok := mountedAt(mnt); ok {
			if err := unmountRetry(mnt); err != nil {
				syscall.Unmount(mnt, syscall.MNT_DETACH)
			}
		}
	}()
	f, err := os.Open(filepath.Join(mnt, "vhdi"+string(rune('1'+depth))))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVHDXFilesystemRoundTrip: a VHDX mounted read-write gets an ext4 file
// system and a tree of files through a loop mount; after a remount the tree
// and e2fsck are clean, vhd check is clean, qemu-img check is clean (fixed and
// dynamic), and qemu-img, 7-Zip and libvhdi read the bytes we read. A parent
// is never written.
func TestVHDXFilesystemRoundTrip(t *testing.T) {
	requireMount(t)
	requireTools(t, "qemu-img", "7zz", "mkfs.ext4", "e2fsck")
	type shape struct {
		name string
		make func(t *testing.T, dir string) (img, parent string)
	}
	qemuCreate := func(opts string) func(t *testing.T, dir string) (string, string) {
		return func(t *testing.T, dir string) (string, string) {
			img := filepath.Join(dir, "disk.vhdx")
			mustRun(t, "qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, img, "96M")
			return img, ""
		}
	}
	shapes := []shape{
		{"qemu dynamic 1M blocks", qemuCreate("subformat=dynamic,block_size=1M")},
		{"qemu dynamic default", qemuCreate("subformat=dynamic")},
		{"qemu fixed", qemuCreate("subformat=fixed,block_state_zero=off")},
		{"qemu fixed with ZERO blocks", qemuCreate("subformat=fixed")},
		{"new dynamic, 4096-byte sectors, made by vhd create", func(t *testing.T, dir string) (string, string) {
			img := filepath.Join(dir, "disk.vhdx")
			mustRun(t, bin("vhd"), "create", "--sector-size", "4096", img, "96M")
			return img, ""
		}},
		{"new child made by vhd create", func(t *testing.T, dir string) (string, string) {
			parent := filepath.Join(dir, "base.vhdx")
			mustRun(t, "qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=2M", parent, "96M")
			mustRun(t, "qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 1M 9M", "-c", "write -P 0xc3 40M 3M", parent)
			img := filepath.Join(dir, "child.avhdx")
			mustRun(t, bin("vhd"), "create", "--parent", parent, img)
			return img, parent
		}},
	}
	for i, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			dir := tempDir(t)
			img, parent := s.make(t, dir)
			var parentSum string
			if parent != "" {
				parentSum, _ = sha256File(t, parent)
			}
			ext4RoundTrip(t, img, uint64(70+i))

			checkClean(t, img)
			ours := flatView(t, img)
			// qemu reads neither children nor 4096-byte sectors.
			if parent == "" && !strings.Contains(s.name, "4096") {
				mustRun(t, "qemu-img", "check", "-q", "-f", "vhdx", img)
				if !bytes.Equal(qemuVHDXView(t, img), ours) {
					t.Error("qemu-img reads different bytes")
				}
			}
			if !bytes.Equal(sevenZipVHDXView(t, img), ours) {
				t.Error("7-Zip reads different bytes")
			}
			depth := 0
			if parent != "" {
				depth = 1
			}
			if !bytes.Equal(libvhdiView(t, img, depth), ours) {
				t.Error("libvhdi reads different bytes")
			}
			if parent != "" {
				if s, _ := sha256File(t, parent); s != parentSum {
					t.Error("the parent image changed")
				}
			}
		})
	}
}
