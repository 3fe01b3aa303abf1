//go:build linux

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// makeTree writes a tree of files of assorted sizes (some sparse-ish, some
// random) under dir and returns their sha256 by relative path.
func makeTree(t *testing.T, dir string, seed uint64) map[string]string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	sums := map[string]string{}
	for i := range 40 {
		rel := filepath.Join(fmt.Sprintf("d%d", i%5), fmt.Sprintf("sub%d", i%3), fmt.Sprintf("f%02d.bin", i))
		n := rng.IntN(256 << 10)
		if i%10 == 0 {
			n = 1<<20 + rng.IntN(1<<20)
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32() >> 7)
		}
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		sums[rel] = hex.EncodeToString(s[:])
	}
	return sums
}

func checkTree(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := treeSums(t, dir)
	for p, s := range want {
		if got[p] != s {
			t.Errorf("%s: sha256 %q, want %q", p, got[p], s)
		}
	}
}

// flatView reads an image's whole virtual disk through the format package.
func flatView(t *testing.T, path string) []byte {
	t.Helper()
	d, err := format.Open(path, &format.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func peerView(t *testing.T, path string, qemu bool) []byte {
	t.Helper()
	if qemu {
		out := filepath.Join(tempDir(t), "q.raw")
		mustRun(t, "qemu-img", "convert", "--image-opts", "driver=vpc,force_size_calc=current_size,file.filename="+path, "-O", "raw", out)
		b, _ := os.ReadFile(out)
		return b
	}
	cmd := exec.Command("7zz", "e", "-tvhd", "-so", path)
	cmd.Dir = filepath.Dir(path)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("7zz %s: %v", path, err)
	}
	return b
}

func checkClean(t *testing.T, path string) {
	t.Helper()
	if out, code := run(t, bin("vhd"), "check", path); code != 0 {
		t.Errorf("vhd check %s: exit %d\n%s", path, code, out)
	}
}

// TestFilesystemRoundTrip: mkfs.ext4 through disk.raw of a new dynamic disk
// and of a differencing child of a corpus image; copy a tree in through a
// loop mount; unmount all; remount; verify; e2fsck, vhd check; qemu-img and
// 7-Zip read the same bytes as we do; the corpus parent is untouched.
func TestFilesystemRoundTrip(t *testing.T) {
	requireMount(t)
	for _, c := range []string{"new dynamic", "child of a corpus image"} {
		t.Run(c, func(t *testing.T) {
			dir := tempDir(t)
			img := filepath.Join(dir, "disk.vhd")
			var parent string
			var parentSum string
			if c == "new dynamic" {
				mustRun(t, bin("vhd"), "create", img, "96M")
			} else {
				// A Windows 8 dynamic disk of 40 MiB as the parent.
				b, err := os.ReadFile(corpusImage(t, "real/go-vhd/win8.vhd"))
				if err != nil {
					t.Fatal(err)
				}
				parent = filepath.Join(dir, "base.vhd")
				os.WriteFile(parent, b, 0o444)
				parentSum, _ = sha256File(t, parent)
				mustRun(t, bin("vhd"), "create", "--parent", parent, img)
			}
			src := tempDir(t)
			want := makeTree(t, src, 7)
			m := mountImage(t, img)
			mustRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", m.file)
			fsdir := loopMount(t, m.file, "rw")
			mustRun(t, "cp", "-a", src+"/.", fsdir)
			loopUnmount(t, fsdir)
			m.unmount(t)

			m = mountImage(t, img)
			mustRun(t, "e2fsck", "-fn", m.file)
			fsdir = loopMount(t, m.file, "ro")
			checkTree(t, fsdir, want)
			loopUnmount(t, fsdir)
			m.unmount(t)

			checkClean(t, img)
			ours := flatView(t, img)
			if parent == "" {
				if !bytes.Equal(peerView(t, img, true), ours) {
					t.Error("qemu-img reads different bytes")
				}
			}
			if !bytes.Equal(peerView(t, img, false), ours) {
				t.Error("7-Zip reads different bytes")
			}
			if parent != "" {
				if s, _ := sha256File(t, parent); s != parentSum {
					t.Error("the parent image changed")
				}
			}
		})
	}
}

// TestFioVerify: fio writes with several jobs through the mount and verifies
// every block with crc32c.
func TestFioVerify(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("fio")
	testenv.Require(t, err == nil, "fio is not installed")
	dir := tempDir(t)
	img := filepath.Join(dir, "fio.vhd")
	mustRun(t, bin("vhd"), "create", img, "128M")
	m := mountImage(t, img)
	out := mustRun(t, "fio", "--name=verify", "--filename="+m.file, "--rw=randwrite", "--bsrange=4k-256k",
		"--numjobs=4", "--size=32M", "--offset_increment=32M", "--verify=crc32c", "--do_verify=1",
		"--verify_fatal=1", "--ioengine=psync", "--group_reporting")
	if !strings.Contains(out, "verify") || strings.Contains(out, "err=") && !strings.Contains(out, "err= 0") {
		t.Errorf("fio output:\n%s", out)
	}
	m.unmount(t)
	checkClean(t, img)
}

// TestKillDuringWrites kills the server with SIGKILL during a workload of
// write+fsync, several times. After each kill the image opens, has no
// structural problem, and every fsync-acknowledged write reads back.
func TestKillDuringWrites(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	img := filepath.Join(dir, "kill.vhd")
	mustRun(t, bin("vhd"), "create", img, "64M")
	// Per 64 KiB slot: the last write acknowledged by fsync, and the write in
	// flight when the server died (it may or may not have landed, wholly or
	// in part).
	type write struct {
		off int64
		p   []byte
	}
	acked := map[int64]write{}
	pending := map[int64]write{}
	main := rand.New(rand.NewPCG(61, 62))
	for round := range 6 {
		m := mountImage(t, img)
		f, err := os.OpenFile(m.file, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		stop := make(chan struct{})
		done := make(chan struct{})
		rng := rand.New(rand.NewPCG(61, uint64(round)))
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Distinct 64 KiB slots, sometimes at unaligned offsets
				// inside the slot, so block allocation, bitmap updates and
				// partial sectors all happen.
				slot := rng.Int64N(1024)
				w := write{slot*65536 + rng.Int64N(8)*61, make([]byte, 1+rng.IntN(65536-8*61))}
				for i := range w.p {
					w.p[i] = byte(rng.Uint32())
				}
				mu.Lock()
				pending[slot] = w
				mu.Unlock()
				if _, err := f.WriteAt(w.p, w.off); err != nil {
					return
				}
				if err := f.Sync(); err != nil {
					return
				}
				mu.Lock()
				acked[slot] = w
				delete(pending, slot)
				mu.Unlock()
			}
		}()
		time.Sleep(time.Duration(100+main.IntN(300)) * time.Millisecond)
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
		m.done <- nil
		close(stop)
		<-done
		f.Close()
		syscall.Unmount(m.dir, syscall.MNT_DETACH)

		d, err := format.Open(img, nil)
		if err != nil {
			t.Fatalf("round %d: image does not open after kill -9: %v", round, err)
		}
		if probs := d.Check(); len(probs) > 0 {
			t.Fatalf("round %d: check after kill -9: %v", round, probs)
		}
		mu.Lock()
		for slot, w := range acked {
			got := make([]byte, len(w.p))
			if _, err := d.ReadAt(got, w.off); err != nil {
				t.Fatal(err)
			}
			inflight, hasInflight := pending[slot]
			for i := range got {
				if got[i] == w.p[i] {
					continue
				}
				if o := w.off + int64(i) - inflight.off; hasInflight && o >= 0 && o < int64(len(inflight.p)) && got[i] == inflight.p[o] {
					continue
				}
				t.Fatalf("round %d: fsync-acknowledged write of %d bytes at %d lost (byte %d)", round, len(w.p), w.off, i)
			}
		}
		// What was in flight is now whatever landed; the next round starts
		// from the disk as it is, so forget both for slots in flight.
		for slot := range pending {
			delete(acked, slot)
		}
		clear(pending)
		t.Logf("round %d: %d acknowledged writes verified", round, len(acked))
		mu.Unlock()
		d.Close()
	}
	checkClean(t, img)
}

// TestVhdimountReadsOurChain: a chain we wrote in 4 KiB-aligned units (so
// every bitmap byte is 0x00 or 0xFF, which libvhdi reads correctly) reads
// the same through libvhdi's vhdimount as through our own reader.
func TestVhdimountReadsOurChain(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("vhdimount")
	testenv.Require(t, err == nil, "vhdimount is not installed (libvhdi-utils)")
	dir := tempDir(t)
	rng := rand.New(rand.NewPCG(62, 62))
	prev := filepath.Join(dir, "l0.vhd")
	mustRun(t, bin("vhd"), "create", prev, "24M")
	for i := range 4 {
		if i > 0 {
			child := filepath.Join(dir, fmt.Sprintf("l%d.vhd", i))
			mustRun(t, bin("vhd"), "create", "--parent", prev, child)
			prev = child
		}
		d, err := format.Open(prev, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 30 {
			off := rng.Int64N(d.Size()/4096) * 4096
			p := make([]byte, min(4096*(1+rng.Int64N(300)), d.Size()-off))
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
	}
	mnt := tempDir(t)
	mustRun(t, "vhdimount", prev, mnt)
	defer func() {
		if _, ok := mountedAt(mnt); ok {
			syscall.Unmount(mnt, 0)
		}
	}()
	// vhdimount shows the root of the chain as vhdi1 and layer K as vhdi(K+1).
	f, err := os.Open(filepath.Join(mnt, "vhdi4"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, flatView(t, prev)) {
		t.Error("vhdimount reads different bytes")
	}
}

// TestDemo runs `make demo`, the README's main-job command, and checks it
// reports success and leaves nothing behind.
func TestDemo(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("make")
	testenv.Require(t, err == nil, "make is not installed")
	before := len(mounts())
	cmd := exec.Command("make", "--no-print-directory", "demo")
	cmd.Dir = repoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	for _, want := range []string{"child sees: changed in the child", "base.vhd is byte for byte unchanged", "no problems found (2 image(s)", "demo done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if after := len(mounts()); after != before {
		t.Errorf("%d mounts before the demo, %d after", before, after)
	}
	if m, _ := filepath.Glob("/tmp/vhdmount-demo.*"); len(m) > 0 {
		t.Errorf("demo left %v", m)
	}
}
