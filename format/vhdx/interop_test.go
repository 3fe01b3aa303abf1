package vhdx_test

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// The interop tests give images our builder makes to qemu-img, 7-Zip and
// libvhdi, and check that they read the bytes the model (and this package)
// reads. Each tool's known bugs (shared/docs/vhdx-notes.md section 3) are
// kept out of its images: qemu gets no 4096-byte sectors and no
// differencing files, 7-Zip no size with an odd number of 512-byte
// sectors, libvhdi no ZERO-like blocks in a child, no upper-case GUIDs and
// no user metadata item reusing a system item's GUID (it reads it as that
// item). The builder's user items are off in all of them.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	testenv.Require(t, err == nil, name+" is not installed (apt-get install qemu-utils 7zip libvhdi-utils)")
	return p
}

type interopImage struct {
	name   string
	layers []*tLayer // top first
}

// interopImages builds the images in dir. diffStates restricts the states
// of differencing layers' blocks (libvhdi).
func interopImages(t *testing.T, dir string, lss4096, diff bool) []interopImage {
	rng := rand.New(rand.NewPCG(2026, 11))
	var out []interopImage
	mk := func(name string, size, bs int64, lss int, fixed bool) *tLayer {
		l := randomLayer(rng, name, byte(len(out)+1), size, bs, lss, false)
		l.userItem = false
		if fixed {
			l.fixed = true
			for b := int64(0); b < l.nblocks(); b++ {
				l.states[b] = tFully
			}
		}
		return l
	}
	add := func(layers ...*tLayer) {
		for i := 0; i+1 < len(layers); i++ {
			c, p := layers[i], layers[i+1]
			c.locator = []tKV{{"parent_linkage", tGUIDText(p.dataWrite)}, {"relative_path", `.\` + p.name},
				{"absolute_win32_path", `C:\VMs\` + p.name}}
		}
		if err := writeChain(rng, dir, layers); err != nil {
			t.Fatal(err)
		}
		out = append(out, interopImage{layers[0].name, layers})
	}
	add(mk("dyn-1M.vhdx", 70<<20+3072, 1<<20, 512, false))
	add(mk("dyn-32M.vhdx", 130<<20, 32<<20, 512, false))
	add(mk("fixed-2M.vhdx", 21<<20, 2<<20, 512, true))
	if lss4096 {
		add(mk("dyn-2M-4k.vhdx", 40<<20+8192, 2<<20, 4096, false))
	}
	if diff {
		base := mk("base.vhdx", 70<<20, 1<<20, 512, false)
		child := randomLayer(rng, "child.vhdx", 40, 70<<20, 2<<20, 512, true)
		child.userItem = false     // libvhdi reads a user item with a system GUID as that item
		bits := make([]bool, 4096) // random bits: sub-byte runs check the bit order
		for i := range bits {
			bits[i] = rng.IntN(2) == 0
		}
		child.states[3], child.bits[3] = tPartial, bits
		for b, s := range child.states {
			if s != tFully && s != tPartial {
				child.states[b] = tNotPresent // libvhdi reads the parent for ZERO blocks of a child
			}
		}
		add(child, base)
	}
	return out
}

func sumFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// modelAndOurs returns the model's sha256 of the image's flat disk after
// checking that this package reads the same.
func modelAndOurs(t *testing.T, dir string, im interopImage) string {
	t.Helper()
	want := sha256.Sum256(expect(im.layers, 0, im.layers[0].size))
	ch, err := openChain(filepath.Join(dir, im.name), openFile)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ours, err := ch.sha256()
	if err != nil {
		t.Fatal(err)
	}
	if ours != hex.EncodeToString(want[:]) {
		t.Fatalf("%s: we read %s, the model %x", im.name, ours, want)
	}
	return ours
}

func TestInteropQemu(t *testing.T) {
	qemu := needTool(t, "qemu-img")
	dir := t.TempDir()
	for _, im := range interopImages(t, dir, false, false) {
		t.Run(im.name, func(t *testing.T) {
			want := modelAndOurs(t, dir, im)
			out := filepath.Join(dir, im.name+".raw")
			if b, err := exec.Command(qemu, "convert", "-f", "vhdx", "-O", "raw", filepath.Join(dir, im.name), out).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img: %v: %s", err, b)
			}
			defer os.Remove(out)
			if got := sumFile(t, out); got != want {
				t.Fatalf("qemu-img reads %s; we and the model %s", got, want)
			}
		})
	}
}

func TestInterop7zip(t *testing.T) {
	sz := needTool(t, "7zz")
	dir := t.TempDir()
	for _, im := range interopImages(t, dir, true, true) {
		t.Run(im.name, func(t *testing.T) {
			want := modelAndOurs(t, dir, im)
			out := filepath.Join(dir, im.name+".raw")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(out)
			cmd := exec.Command(sz, "e", "-tvhdx", "-so", im.name)
			cmd.Dir, cmd.Stdout = dir, f
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err = cmd.Run()
			f.Close()
			if err != nil {
				t.Fatalf("7zz: %v: %s", err, stderr.String())
			}
			if got := sumFile(t, out); got != want {
				t.Fatalf("7-Zip reads %s; we and the model %s", got, want)
			}
		})
	}
}

func TestInteropLibvhdi(t *testing.T) {
	vm := needTool(t, "vhdimount")
	fm := needTool(t, "fusermount")
	_, err := os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "no /dev/fuse")
	dir := t.TempDir()
	for _, im := range interopImages(t, dir, true, true) {
		t.Run(im.name, func(t *testing.T) {
			want := modelAndOurs(t, dir, im)
			mnt := t.TempDir()
			if b, err := exec.Command(vm, filepath.Join(dir, im.name), mnt).CombinedOutput(); err != nil {
				t.Fatalf("vhdimount: %v: %s", err, b)
			}
			defer func() {
				for i := 0; i < 50; i++ {
					if exec.Command(fm, "-u", mnt).Run() == nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				t.Errorf("could not unmount %s", mnt)
			}()
			// The highest vhdiN is the image itself, lower ones its parents.
			name := "vhdi" + string(rune('0'+len(im.layers)))
			if got := sumFile(t, filepath.Join(mnt, name)); got != want {
				ents, _ := os.ReadDir(mnt)
				t.Fatalf("libvhdi reads %s; we and the model %s (mount holds %v)", got, want, ents)
			}
		})
	}
}
