//go:build linux

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
			ext4RoundTrip(t, img, 7)

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
// every block with crc32c. It runs in a temp dir (fio leaves
// local-verify-*.state files in its working directory), and its JSON report
// must show every job without error, all the data written and read back.
func TestFioVerify(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("fio")
	testenv.Require(t, err == nil, "fio is not installed")
	dir := tempDir(t)
	img := filepath.Join(dir, "fio.vhd")
	mustRun(t, bin("vhd"), "create", img, "128M")
	m := mountImage(t, img)
	const jobs, size = 4, 32 << 20
	cmd := exec.Command("fio", "--name=verify", "--filename="+m.file, "--rw=randwrite", "--bsrange=4k-256k",
		fmt.Sprintf("--numjobs=%d", jobs), fmt.Sprintf("--size=%d", size), fmt.Sprintf("--offset_increment=%d", size),
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--ioengine=psync", "--output-format=json")
	cmd.Dir = tempDir(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fio: %v\n%s\n%s", err, stderr.String(), out)
	}
	if err := checkFioReport(out, jobs, size); err != nil {
		t.Errorf("%v\nfio stderr: %s", err, stderr.String())
	}
	m.unmount(t)
	checkClean(t, img)
}

// checkFioReport checks fio's JSON report of a verify run: jobs jobs, each
// without error, each having written size bytes and read them all back.
func checkFioReport(report []byte, jobs int, size int64) error {
	// fio may print notes before the JSON object.
	if i := bytes.IndexByte(report, '{'); i > 0 {
		report = report[i:]
	}
	var r struct {
		Jobs []struct {
			Name  string `json:"jobname"`
			Error int    `json:"error"`
			Write struct {
				Bytes int64 `json:"io_bytes"`
			} `json:"write"`
			Read struct {
				Bytes int64 `json:"io_bytes"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(report, &r); err != nil {
		return fmt.Errorf("fio report: %v\n%s", err, report)
	}
	if len(r.Jobs) != jobs {
		return fmt.Errorf("fio reports %d jobs, want %d", len(r.Jobs), jobs)
	}
	for i, j := range r.Jobs {
		if j.Error != 0 || j.Write.Bytes != size || j.Read.Bytes != size {
			return fmt.Errorf("fio job %d (%s): error %d, wrote %d bytes, verified %d; want 0, %d, %d",
				i, j.Name, j.Error, j.Write.Bytes, j.Read.Bytes, size, size)
		}
	}
	return nil
}

// TestKillDuringWrites kills the server with SIGKILL during a workload of
// write+fsync, several times. After each kill the image opens, has no
// structural problem, and every fsync-acknowledged write reads back.
func TestKillDuringWrites(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	img := filepath.Join(dir, "kill.vhd")
	mustRun(t, bin("vhd"), "create", img, "64M")
	killDuringWrites(t, img)
}

// TestVHDXKillDuringWrites is TestKillDuringWrites for VHDX: a dynamic VHDX
// made by qemu-img (whose first write also updates the headers) and a
// differencing child of it made by vhd create.
func TestVHDXKillDuringWrites(t *testing.T) {
	requireMount(t)
	requireTools(t, "qemu-img")
	dir := tempDir(t)
	base := filepath.Join(dir, "base.vhdx")
	mustRun(t, "qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", base, "64M")
	t.Run("dynamic", func(t *testing.T) { killDuringWrites(t, base) })
	child := filepath.Join(dir, "child.avhdx")
	mustRun(t, bin("vhd"), "create", "--parent", base, child)
	t.Run("differencing", func(t *testing.T) { killDuringWrites(t, child) })
}

// killDuringWrites kills the server of a mount of img with SIGKILL during a
// workload of write+fsync, several times, and checks after each kill that
// img opens, has no structural problem, and reads back every write fsync
// acknowledged.
func killDuringWrites(t *testing.T, img string) {
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
// reports success and leaves nothing behind: no mount, no server, no file
// in its TMPDIR (the demo's own, so nothing else on the machine counts).
func TestDemo(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("make")
	testenv.Require(t, err == nil, "make is not installed")
	tmp := tempDir(t)
	cmd := exec.Command("make", "--no-print-directory", "demo")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	for _, want := range []string{"vhdmount demo in " + tmp + "/vhdmount-demo.", "child sees: changed in the child", "base.vhd is byte for byte unchanged", "no problems found (2 image(s)", "demo done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, m := range mounts() {
		if strings.HasPrefix(m.Point, tmp+"/") {
			t.Errorf("demo left %s mounted", m.Point)
		}
	}
	for pid, args := range processes() {
		if strings.Contains(strings.Join(args, " "), tmp+"/") {
			t.Errorf("demo left process %d running: %q", pid, args)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("demo left %d entries in its TMPDIR, %s", len(left), left[0].Name())
	}
}

// TestCheckFioReport: the check of fio's report fails on a verify error, on
// data not read back, on a missing job, and on a report that is not JSON.
func TestCheckFioReport(t *testing.T) {
	job := func(errno int, w, r int64) string {
		return fmt.Sprintf(`{"jobname":"verify","error":%d,"write":{"io_bytes":%d},"read":{"io_bytes":%d}}`, errno, w, r)
	}
	report := func(jobs ...string) []byte {
		return []byte("fio: a note\n{\"jobs\":[" + strings.Join(jobs, ",") + "]}")
	}
	ok := job(0, 100, 100)
	if err := checkFioReport(report(ok, ok), 2, 100); err != nil {
		t.Errorf("a clean report: %v", err)
	}
	for name, r := range map[string][]byte{
		"verify error (EILSEQ)": report(ok, job(84, 100, 40)),
		"not all verified":      report(ok, job(0, 100, 60)),
		"short write":           report(job(0, 80, 80), ok),
		"a job missing":         report(ok),
		"not JSON":              []byte("fio: verify failed"),
	} {
		if err := checkFioReport(r, 2, 100); err == nil {
			t.Errorf("%s: passed", name)
		}
	}
}

// TestImageDeleted: deleting a writable image (and its directory) while it
// is mounted makes the next fsync fail, and the server says the data is
// lost and exits 1, instead of acknowledging writes that vanish.
func TestImageDeleted(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	img := filepath.Join(dir, "gone.vhd")
	mustRun(t, bin("vhd"), "create", img, "16M")
	m := mountImage(t, img)
	f, err := os.OpenFile(m.file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync before the image is deleted: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{2}, 4096), 1<<20); err != nil {
		t.Logf("write after deletion: %v", err)
	}
	if err := f.Sync(); err == nil {
		t.Error("fsync succeeded after the image was deleted")
	}
	f.Close()
	if err := unmountRetry(m.dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-m.done:
		m.done <- nil // unmount at cleanup: nothing to wait for
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("server exit: %v, want status 1", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not exit within 20s of umount")
	}
	if out := m.out.String(); !strings.Contains(out, "DATA LOST") || !strings.Contains(out, img+" was deleted while mounted") {
		t.Errorf("server output does not say the data is lost:\n%s", out)
	}
}

// TestIOErrorReported: an I/O error after the mount is live (here the image
// is truncated under it) is reported on stderr in the foreground, and in
// the --log file (-o log=FILE) when detached.
func TestIOErrorReported(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	img := filepath.Join(dir, "io.vhd")
	mustRun(t, bin("vhd"), "create", img, "16M")
	d, err := format.Open(img, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(bytes.Repeat([]byte{7}, 4<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(img)
	full, _ := os.ReadFile(img)
	damage := func() {
		t.Helper()
		if err := os.Truncate(img, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func(path string) error {
		_, err := os.ReadFile(path)
		return err
	}
	restore := func() { os.WriteFile(img, full, 0o644) }

	t.Run("foreground", func(t *testing.T) {
		defer restore()
		m := mountImage(t, img, "--ro")
		damage()
		if err := readAll(m.file); err == nil {
			t.Fatal("reading a truncated image succeeded")
		}
		m.unmount(t)
		if out := m.out.String(); !strings.Contains(out, "vhdmount: I/O error: ") || !strings.Contains(out, img) {
			t.Errorf("stderr does not report the I/O error:\n%s", out)
		}
	})
	t.Run("detached with -o log=FILE", func(t *testing.T) {
		defer restore()
		logFile := filepath.Join(tempDir(t), "vhdmount.log")
		os.WriteFile(logFile, []byte("an earlier line\n"), 0o644)
		mnt := tempDir(t)
		mustRun(t, bin("vhdmount"), "-o", "ro,log="+logFile, img, mnt)
		srv := adoptDaemon(t, mnt)
		damage()
		if err := readAll(filepath.Join(mnt, "disk.raw")); err == nil {
			t.Fatal("reading a truncated image succeeded")
		}
		srv.unmount(t)
		b, _ := os.ReadFile(logFile)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		ioErr := false
		for _, l := range lines[1:] {
			ioErr = ioErr || strings.Contains(l, fmt.Sprintf(" vhdmount[%d]: I/O error: ", srv.pid)) && strings.Contains(l, img)
		}
		if lines[0] != "an earlier line" || !ioErr {
			t.Errorf("log file does not append the I/O error:\n%s", b)
		}
	})
}

// ext4RoundTrip makes an ext4 filesystem in the mounted image, copies a
// tree made from seed into it through a loop device, unmounts, mounts the
// image again, and checks the filesystem (e2fsck) and the tree.
func ext4RoundTrip(t *testing.T, img string, seed uint64) {
	t.Helper()
	src := tempDir(t)
	want := makeTree(t, src, seed)
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
}
