//go:build linux

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/mountinfo"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

func sha256File(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// TestMountCorpus mounts every readable corpus case and compares disk.raw's
// size and sha256 with the corpus; refusals must exit non-zero with a message
// and leave nothing mounted.
func TestMountCorpus(t *testing.T) {
	requireMount(t)
	corpus := testenv.CorpusDir(t)
	for _, c := range testenv.Cases(t, corpus) {
		t.Run(c.Name, func(t *testing.T) {
			img := testenv.Unpack(t, corpus, c.Open)
			if c.Error != "" {
				dir := tempDir(t)
				out, code := run(t, bin("vhdmount"), img, dir)
				if code == 0 {
					syscall.Unmount(dir, 0)
					t.Fatalf("vhdmount mounted a %q case", c.Error)
				}
				if !strings.Contains(out, "vhdmount: ") || !strings.Contains(out, filepath.Base(img)) {
					t.Errorf("message does not name the image: %q", out)
				}
				if _, ok := mountedAt(dir); ok {
					t.Errorf("%s is mounted after a refusal", dir)
				}
				return
			}
			m := mountImage(t, img, "--ro")
			fi, err := os.Stat(m.file)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != c.Size {
				t.Fatalf("disk.raw is %d bytes, want %d", fi.Size(), c.Size)
			}
			switch {
			case c.SHA256 != "":
				if sum, _ := sha256File(t, m.file); sum != c.SHA256 {
					t.Fatalf("sha256 %s, want %s", sum, c.SHA256)
				}
			case strings.Contains(c.Note, "all zeros"):
				checkZerosAndHoles(t, m.file, c.Size)
			default:
				// The ext4-3G cases: the format package compares them with
				// the source raw in full; here the first 64 MiB (everything
				// the filesystem wrote) and SEEK_DATA must agree with it.
				src := filepath.Join(corpus, filepath.Dir(c.Open), "ext4-3G.raw.gz")
				comparePrefix(t, m.file, src, 64<<20)
			}
		})
	}
}

// checkZerosAndHoles checks a huge empty disk through the mount: SEEK_DATA
// finds nothing, and reads at both ends and in between return zeros.
func checkZerosAndHoles(t *testing.T, path string, size int64) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off, err := f.Seek(0, 3 /* SEEK_DATA */); err != syscall.ENXIO && !isENXIO(err) {
		t.Fatalf("SEEK_DATA on an empty disk: %d, %v; want ENXIO", off, err)
	}
	buf := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 32; i++ {
		off := rng.Int64N(size/512-2048) * 512
		if i == 0 {
			off = 0
		} else if i == 1 {
			off = size - int64(len(buf))
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Fatalf("non-zero bytes at %d", off)
		}
	}
}

func isENXIO(err error) bool {
	var pe *fs.PathError
	if e, ok := err.(*fs.PathError); ok {
		pe = e
		return pe.Err == syscall.ENXIO
	}
	return false
}

// comparePrefix compares the first n bytes of path with the gzipped raw src.
func comparePrefix(t *testing.T, path, src string, n int64) {
	t.Helper()
	r, err := testenv.OpenGz(src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want, err := io.ReadAll(io.LimitReader(r, n))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("first %d bytes of disk.raw differ from %s", n, src)
	}
}

// TestLoopMountExt4 loop-mounts the ext4 filesystem inside each qemu-img
// image through disk.raw and compares every file with the same filesystem
// loop-mounted from the source raw file the images were made from.
func TestLoopMountExt4(t *testing.T) {
	requireMount(t)
	want := map[string]map[string]string{}
	for _, src := range []string{"ext4-10M512", "ext4-3G"} {
		raw := corpusImage(t, "generated/qemu-img/"+src+".raw.gz")
		want[src] = treeSums(t, loopMount(t, raw, "ro"))
		if len(want[src]) < 3 {
			t.Fatalf("%s holds only %d files", src, len(want[src]))
		}
	}
	for _, name := range []string{"ext4-10M512.dyn", "ext4-10M512.dyn-force", "ext4-10M512.fixed", "ext4-10M512.fixed-force",
		"ext4-3G.dyn", "ext4-3G.dyn-force", "ext4-3G.fixed", "ext4-3G.fixed-force"} {
		t.Run(name, func(t *testing.T) {
			img := corpusImage(t, "generated/qemu-img/"+name+".vhd.gz")
			m := mountImage(t, img, "--ro")
			mustRun(t, "e2fsck", "-fn", m.file)
			dir := loopMount(t, m.file, "ro")
			got := treeSums(t, dir)
			src := strings.Split(name, ".")[0]
			if len(got) != len(want[src]) {
				t.Errorf("%d files, want %d", len(got), len(want[src]))
			}
			for p, sum := range want[src] {
				if got[p] != sum {
					t.Errorf("%s: sha256 %s, want %s", p, got[p], sum)
				}
			}
		})
	}
}

// treeSums returns the sha256 of every regular file under dir, by relative path.
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out[rel], _ = sha256File(t, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConcurrentReads reads a 5-deep differencing chain through the mount
// from several goroutines at random offsets and compares with the corpus's
// expected flat disk.
func TestConcurrentReads(t *testing.T) {
	requireMount(t)
	img := corpusImage(t, "generated/chain-deep/deep4.vhd.gz")
	r, err := testenv.OpenGz(filepath.Join(testenv.CorpusDir(t), "generated/chain-deep/deep4.expected.raw.gz"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := mountImage(t, img, "--ro")
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(m.file)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 300 {
				n := 1 + rng.IntN(256<<10)
				off := rng.Int64N(int64(len(want) - n))
				buf := make([]byte, n)
				if _, err := f.ReadAt(buf, off); err != nil {
					errs <- err.Error()
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(n)]) {
					errs <- fmt.Sprintf("%d bytes at %d differ from the expected disk", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestBadUse: each misuse is one clear message, a non-zero exit, and nothing mounted.
func TestBadUse(t *testing.T) {
	requireMount(t)
	img := corpusImage(t, "real/dfvfs/ext2.vhd")
	busy := mountImage(t, img, "--ro")
	notVHD := filepath.Join(tempDir(t), "notes.txt")
	os.WriteFile(notVHD, bytes.Repeat([]byte("not a disk\n"), 100), 0o644)
	// A copy mounted read-write: a second writer must be refused.
	b, _ := os.ReadFile(img)
	inUse := filepath.Join(tempDir(t), "inuse.vhd")
	os.WriteFile(inUse, b, 0o644)
	holder := mountImage(t, inUse)
	cases := []struct {
		name, image, mnt, want string
	}{
		{"missing image", "/nonexistent/x.vhd", tempDir(t), "no such file"},
		{"missing mountpoint", img, "/nonexistent/mnt", "mountpoint"},
		{"already mounted", img, busy.dir, "already a mount point"},
		{"not a VHD", notVHD, tempDir(t), "not a VHD"},
		{"image mounted read-write elsewhere", inUse, tempDir(t), "image in use by the mount at " + holder.dir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ownMounts()
			start := time.Now()
			out, code := run(t, bin("vhdmount"), c.image, c.mnt)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("output %q: want one line containing %q", out, c.want)
			}
			// Only a server shutting down after umount is waited for; a
			// live mount holding the image is named at once.
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v to fail", d)
			}
			if after := ownMounts(); len(after) != len(before) {
				t.Errorf("mounts of this run: %v before, %v after", before, after)
			}
		})
	}
	for _, args := range [][]string{{"only-one-arg"}, {img, ""}, {"", tempDir(t)}, {"--bogus", img, tempDir(t)}} {
		// In a directory of its own: an empty path means the working
		// directory to mount(2), and older versions mounted over it.
		out, code := runIn(t, tempDir(t), bin("vhdmount"), args...)
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "see 'vhdmount --help'") {
			t.Errorf("%q: exit %d, output %q; want 2 and one line pointing at --help", args, code, out)
		}
	}
	if out, code := run(t, bin("vhdmount"), "--help"); code != 0 || !strings.HasPrefix(out, "usage: vhdmount") {
		t.Errorf("--help: exit %d, output %q", code, out)
	}
}

// TestLockHolder: mounting read-write an image whose chain a live writable
// mount holds fails at once and names that mount, in both directions (the
// parent of a mounted child, the child of a mounted parent).
func TestLockHolder(t *testing.T) {
	requireMount(t)
	dir := tempDir(t)
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	mustRun(t, bin("vhd"), "create", base, "16M")
	mustRun(t, bin("vhd"), "create", "--parent", base, child)
	for _, c := range []struct{ held, wanted string }{{child, base}, {base, child}} {
		m := mountImage(t, c.held)
		start := time.Now()
		out, code := run(t, bin("vhdmount"), c.wanted, tempDir(t))
		if code != 1 || !strings.Contains(out, "in use by the mount at "+m.dir) {
			t.Errorf("mounting %s while %s is mounted: exit %d, %q; want 1 naming %s", filepath.Base(c.wanted), filepath.Base(c.held), code, out, m.dir)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v to fail", d)
		}
		m.unmount(t)
	}
	// umount returns while the server may still be syncing: a mount right
	// after it waits for the lock rather than failing.
	for range 3 {
		first, second := tempDir(t), tempDir(t)
		mustRun(t, bin("vhdmount"), child, first)
		srv := adoptDaemon(t, first)
		mustRun(t, "umount", first)
		mustRun(t, bin("vhdmount"), child, second)
		waitGone(t, srv.pid)
		adoptDaemon(t, second).unmount(t)
	}
}

// TestDaemon: without -f vhdmount returns only once the mount is live, and
// the detached server exits after umount.
func TestDaemon(t *testing.T) {
	requireMount(t)
	img := corpusImage(t, "real/dfvfs/ext2.vhd")
	dir := tempDir(t)
	out, code := run(t, bin("vhdmount"), "-o", "ro", img, dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	srv := adoptDaemon(t, dir) // mounted as soon as vhdmount returned: no waiting
	m, _ := mountedAt(dir)
	if m.FSType != "fuse.vhdmount" || !strings.Contains(m.Options, "ro") {
		t.Errorf("mount type %q options %q; want fuse.vhdmount, ro", m.FSType, m.Options)
	}
	checkExt2Sum(t, dir)
	srv.unmount(t)
}

// checkExt2Sum checks disk.raw under dir is the corpus's dfvfs/ext2.vhd.
func checkExt2Sum(t *testing.T, dir string) {
	t.Helper()
	if sum, _ := sha256File(t, filepath.Join(dir, "disk.raw")); !strings.HasPrefix(sum, "870be7ae") {
		t.Errorf("sha256 %s, want 870be7ae…", sum)
	}
}

// detached is a vhdmount server that detached after mounting dir.
type detached struct {
	dir string
	pid int
}

// adoptDaemon takes charge of the detached server serving dir: the test fails
// if dir is not mounted, and cleanup detaches it if the test did not unmount.
func adoptDaemon(t *testing.T, dir string) *detached {
	t.Helper()
	if _, ok := mountedAt(dir); !ok {
		t.Fatalf("%s is not mounted", dir)
	}
	d := &detached{dir: dir, pid: serverPid(dir)}
	if d.pid == 0 {
		t.Errorf("no server process found for %s", dir)
	}
	t.Cleanup(func() {
		if _, ok := mountedAt(dir); ok {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return d
}

// unmount runs the unmount command (umount DIR by default) and waits for the
// server to exit.
func (d *detached) unmount(t *testing.T, cmd ...string) {
	t.Helper()
	if len(cmd) == 0 {
		cmd = []string{"umount", d.dir}
	}
	mustRun(t, cmd[0], cmd[1:]...)
	if d.pid != 0 {
		waitGone(t, d.pid)
	}
}

// serverPid finds the vhdmount process serving dir.
func serverPid(dir string) int {
	for pid, args := range processes() {
		if !strings.HasSuffix(args[0], "vhdmount") {
			continue
		}
		for _, a := range args[1:] { // mount.fuse3 appends -o options after it
			if a == dir {
				return pid
			}
		}
	}
	return 0
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("server %d still running 20s after umount", pid)
}

// TestSignal: SIGTERM to a foreground server unmounts and exits 0.
func TestSignal(t *testing.T) {
	requireMount(t)
	m := mountImage(t, corpusImage(t, "real/dfvfs/ext2.vhd"), "--ro")
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.done:
		m.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, m.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	if _, ok := mountedAt(m.dir); ok {
		t.Error("still mounted after SIGTERM")
	}
}

// TestReadOnly: --ro and a read-only image file both give a read-only mount
// where writes fail with EROFS.
func TestReadOnly(t *testing.T) {
	requireMount(t)
	img := corpusImage(t, "real/dfvfs/ext2.vhd")
	copyPath := filepath.Join(tempDir(t), "ro.vhd")
	b, _ := os.ReadFile(img)
	os.WriteFile(copyPath, b, 0o444)
	for _, c := range []struct {
		name, image string
		args        []string
	}{{"--ro", img, []string{"--ro"}}, {"-o ro", img, []string{"-o", "ro"}}, {"read-only file", copyPath, nil}} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "read-only file" && os.Geteuid() == 0 {
				// root ignores mode bits; make the file immutable instead
				_, code := run(t, "chattr", "+i", copyPath)
				testenv.Require(t, code == 0, "chattr +i not supported on this filesystem, and root can write any file")
				defer run(t, "chattr", "-i", copyPath)
			}
			m := mountImage(t, c.image, c.args...)
			fi, err := os.Stat(m.file)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o444 {
				t.Errorf("mode %v, want 0444", fi.Mode())
			}
			f, err := os.OpenFile(m.file, os.O_WRONLY, 0)
			if err == nil {
				f.Close()
				t.Fatal("opened disk.raw for writing on a read-only mount")
			}
			if !strings.Contains(err.Error(), "read-only") {
				t.Errorf("open for write: %v, want EROFS", err)
			}
			m.unmount(t)
			// The user asked for a writable mount of a read-only file: one
			// line says it is read-only, in the foreground and detached.
			hasNotice := func(out string) bool {
				return strings.Contains(out, "is not writable (") && strings.Contains(out, "): mounting read-only")
			}
			if got := hasNotice(m.out.String()); got != (c.args == nil) {
				t.Errorf("foreground output %q: read-only notice shown: %v", m.out, got)
			}
			if c.args == nil {
				dir := tempDir(t)
				out, code := run(t, bin("vhdmount"), c.image, dir)
				if code != 0 || strings.Count(out, "\n") != 1 || !hasNotice(out) {
					t.Errorf("detached: exit %d, output %q; want 0 and the one-line notice", code, out)
				}
				if code == 0 {
					adoptDaemon(t, dir).unmount(t)
				}
			}
		})
	}
}

// TestMountHelper: `mount -t fuse.vhdmount IMAGE DIR -o ro` works through
// mount.fuse3 with vhdmount on PATH, as an fstab line would.
func TestMountHelper(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("mount.fuse3")
	testenv.Require(t, err == nil, "mount.fuse3 not installed (Debian package fuse3)")
	img := corpusImage(t, "real/dfvfs/ext2.vhd")
	dir := tempDir(t)
	// mount.fuse3 runs the helper through /bin/sh with a fixed PATH, so it
	// must be installed; put ours there for the test unless one already is.
	const installed = "/usr/local/bin/vhdmount"
	if _, err := os.Lstat(installed); err == nil {
		t.Logf("using the already installed %s", installed)
	} else {
		if err := os.Symlink(bin("vhdmount"), installed); err != nil {
			testenv.Require(t, false, "cannot install vhdmount into /usr/local/bin: "+err.Error())
		}
		t.Cleanup(func() { os.Remove(installed) })
	}
	// log=FILE passes through mount.fuse3 as an fstab line would give it.
	logFile := filepath.Join(tempDir(t), "vhdmount.log")
	mustRun(t, "mount", "-t", "fuse.vhdmount", img, dir, "-o", "ro,nofail,log="+logFile)
	srv := adoptDaemon(t, dir)
	if m, _ := mountedAt(dir); !strings.HasPrefix(m.Options, "ro") {
		t.Errorf("options %q, want ro", m.Options)
	}
	checkExt2Sum(t, dir)
	srv.unmount(t)
	b, _ := os.ReadFile(logFile)
	tag := fmt.Sprintf(" vhdmount[%d]: ", srv.pid)
	// ext2.vhd has no partition table: the log file notes it at mount.
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 3 ||
		!strings.Contains(lines[0], tag+"no partition table") ||
		!strings.Contains(lines[1], tag+img+" mounted at "+dir) || !strings.Contains(lines[2], tag+img+" unmounted from "+dir+"; exit status 0") {
		t.Errorf("log file, want the note on the partition table, the mount and the unmount:\n%s", b)
	}
}

// TestSeekHole: SEEK_DATA/SEEK_HOLE on disk.raw follow the allocation of a
// dynamic image qemu-img made from a raw file with data in two places.
func TestSeekHole(t *testing.T) {
	requireMount(t)
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img not installed")
	dir := tempDir(t)
	raw := filepath.Join(dir, "src.raw")
	f, _ := os.Create(raw)
	f.Truncate(64 << 20)
	f.WriteAt(bytes.Repeat([]byte{1}, 4096), 6<<20+512)   // block 3
	f.WriteAt(bytes.Repeat([]byte{2}, 4096), 40<<20+8192) // block 20
	f.Close()
	img := filepath.Join(dir, "sparse.vhd")
	mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", raw, img)
	m := mountImage(t, img, "--ro")
	g, err := os.Open(m.file)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	seek := func(off int64, whence int) int64 {
		n, err := g.Seek(off, whence)
		if err != nil {
			t.Fatalf("seek(%d, %d): %v", off, whence, err)
		}
		return n
	}
	const mb = 1 << 20
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{{0, 3, 6 * mb}, {6 * mb, 4, 8 * mb}, {8 * mb, 3, 40 * mb}, {41 * mb, 4, 42 * mb}, {42 * mb, 4, 42 * mb}} {
		if got := seek(c.off, c.whence); got != c.want {
			t.Errorf("seek(%d MiB, %d) = %d MiB, want %d MiB", c.off/mb, c.whence, got/mb, c.want/mb)
		}
	}
	if _, err := g.Seek(43*mb, 3); !isENXIO(err) {
		t.Errorf("SEEK_DATA past the last data: %v, want ENXIO", err)
	}
	// cp --sparse=always produces the same bytes and a sparse file.
	out := filepath.Join(dir, "copy.raw")
	mustRun(t, "cp", "--sparse=always", m.file, out)
	a, _ := sha256File(t, out)
	b, _ := sha256File(t, raw)
	if a != b {
		t.Errorf("cp of disk.raw differs from the source raw")
	}
}

// TestWithoutFusermount: as root vhdmount mounts with mount(2) directly and
// needs no fusermount binary (PATH holds none here).
func TestWithoutFusermount(t *testing.T) {
	requireMount(t)
	img := corpusImage(t, "real/dfvfs/ext2.vhd")
	dir := tempDir(t)
	cmd := exec.Command(bin("vhdmount"), "--ro", img, dir)
	cmd.Env = []string{"PATH=/nonexistent"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vhdmount without PATH: %v: %s", err, out)
	}
	srv := adoptDaemon(t, dir)
	checkExt2Sum(t, dir)
	srv.unmount(t)
}

// TestUnprivilegedUser: an ordinary user mounts through fusermount3, reads
// disk.raw, and unmounts with fusermount3 -u. fusermount3 opens /dev/fuse
// as that user, and some machines (containers) make it 0600: the test runs
// in a private mount namespace whose /dev/fuse is a node of its own, mode
// 0666, and never changes the host's.
func TestUnprivilegedUser(t *testing.T) {
	requireMount(t)
	ns := newPrivateFuse(t, 0o666)
	img, mnt := nobodysImage(t)
	if out, err := ns.asNobody(bin("vhdmount"), img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("vhdmount as nobody: %v: %s", err, out)
	}
	pid := serverPid(mnt)
	if pid == 0 {
		t.Errorf("no server process found for %s", mnt)
	}
	ns.checkHostFuse(t)
	m, ok := ns.mountedAt(mnt)
	if !ok {
		t.Fatalf("%s is not mounted in the private namespace", mnt)
	}
	if !strings.Contains(m.Source, "user.vhd") || m.FSType != "fuse.vhdmount" {
		t.Errorf("mount source %q type %q", m.Source, m.FSType)
	}
	if _, ok := mountedAt(mnt); ok {
		t.Errorf("%s is mounted in the host's namespace too", mnt)
	}
	out, err := ns.asNobody("sha256sum", filepath.Join(mnt, "disk.raw")).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "870be7ae") {
		t.Errorf("sha256sum as nobody: %v: %s", err, out)
	}
	// Only the mounting user may look into the mount (no allow_other), not even root.
	out, err = ns.asNobody("stat", "-c", "%u", mnt).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(nobody) {
		t.Errorf("mount root owned by %q (%v), want the mounting user", out, err)
	}
	if out, err := ns.asNobody("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Errorf("fusermount3 -u as nobody: %v: %s", err, out)
	}
	if pid != 0 {
		waitGone(t, pid)
	}
	if _, ok := ns.mountedAt(mnt); ok {
		t.Errorf("%s still mounted after fusermount3 -u", mnt)
	}
}

// TestFusermountFailure: when fusermount3 refuses to mount, a detached
// vhdmount prints fusermount3's own reason and a hint, not only "exited
// with code 256".
func TestFusermountFailure(t *testing.T) {
	requireMount(t)
	ns := newPrivateFuse(t, 0o600)
	img, mnt := nobodysImage(t)
	try := func(want []string, args ...string) {
		t.Helper()
		for _, fg := range [][]string{nil, {"-f"}} {
			out, err := ns.asNobody(append(append([]string{bin("vhdmount")}, fg...), append(args, img, mnt)...)...).CombinedOutput()
			if _, ok := ns.mountedAt(mnt); ok {
				ns.asNobody("fusermount3", "-u", mnt).Run()
				t.Fatalf("vhdmount %v mounted", args)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Count(string(out), "\n") != 1 {
				t.Errorf("vhdmount %v %v: %v: %q; want exit 1 and one line", fg, args, err, out)
			}
			for _, w := range want {
				if !strings.Contains(string(out), w) {
					t.Errorf("vhdmount %v %v: %q lacks %q", fg, args, out, w)
				}
			}
		}
	}
	// /dev/fuse is 0600 root: fusermount3 cannot open it for nobody.
	try([]string{"fusermount3: failed to open /dev/fuse: Permission denied", "hint: /dev/fuse (mode 0600) must be readable and writable"})
	// allow_other without user_allow_other in (this namespace's empty) /etc/fuse.conf.
	conf := filepath.Join(tempDir(t), "fuse.conf")
	os.WriteFile(conf, nil, 0o644)
	ns.setup(t, fmt.Sprintf("chmod 0666 /dev/fuse && touch /etc/fuse.conf && mount --bind %s /etc/fuse.conf", conf))
	try([]string{"user_allow_other", "hint: allow_other needs the line user_allow_other in /etc/fuse.conf"}, "-o", "allow_other")
	ns.checkHostFuse(t)
}

// nobody is the uid and gid the unprivileged tests run as.
const nobody = 65534

// nobodyHome makes a temp dir that nobody can use.
func nobodyHome(t *testing.T) string {
	t.Helper()
	home := tempDir(t)
	os.Chown(home, nobody, nobody)
	os.Chmod(home, 0o755)
	return home
}

// privateFuse is a private mount namespace, held open by a process of its
// own, in which /dev/fuse is a device node made for the test (on a tmpfs,
// bind-mounted over it). Commands run in it through nsenter; the host's
// mount table and its /dev/fuse stay as they were.
type privateFuse struct {
	holder   *exec.Cmd
	ns       string      // the namespace's /proc/PID/ns/mnt link
	hostMode os.FileMode // the host's /dev/fuse mode before the test
}

func newPrivateFuse(t *testing.T, mode os.FileMode) *privateFuse {
	t.Helper()
	for _, tool := range []string{"unshare", "nsenter", "setpriv", "fusermount3", "mknod"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	p := &privateFuse{hostMode: fi.Mode()}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	p.holder = exec.Command("unshare", "--mount", "--propagation", "private", "--", "sleep", "3600")
	if err := p.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close(t) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		p.ns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.holder.Process.Pid))
		if p.ns != "" && p.ns != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare --mount did not make a namespace within 10s")
		}
	}
	dev := tempDir(t)
	p.setup(t, fmt.Sprintf("mount -t tmpfs -o mode=0755,size=64k vhdmount-test %[1]s && mknod -m %04[2]o %[1]s/fuse c 10 229 && mount --bind %[1]s/fuse /dev/fuse", dev, mode.Perm()))
	p.checkHostFuse(t)
	return p
}

// command runs in the namespace as root.
func (p *privateFuse) command(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(p.holder.Process.Pid), "-m", "--"}, args...)...)
}

// asNobody runs in the namespace as uid and gid 65534.
func (p *privateFuse) asNobody(args ...string) *exec.Cmd {
	return p.command(append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...)
}

// setup runs a shell command in the namespace as root.
func (p *privateFuse) setup(t *testing.T, script string) {
	t.Helper()
	if out, err := p.command("sh", "-ec", script).CombinedOutput(); err != nil {
		t.Fatalf("in the private namespace: %s: %v\n%s", script, err, out)
	}
}

// mountedAt looks dir up in the namespace's mount table.
func (p *privateFuse) mountedAt(dir string) (mountinfo.Mount, bool) {
	ms, _ := mountinfo.ListPid(p.holder.Process.Pid)
	for _, m := range ms {
		if m.Point == dir {
			return m, true
		}
	}
	return mountinfo.Mount{}, false
}

// checkHostFuse fails the test if the host's /dev/fuse changed mode.
func (p *privateFuse) checkHostFuse(t *testing.T) {
	t.Helper()
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode() != p.hostMode {
		t.Errorf("the host's /dev/fuse changed: %v, %v; was %v", fi.Mode(), err, p.hostMode)
	}
}

// close kills every process left in the namespace (the holder, a server
// the test did not unmount), which ends the namespace and its mounts.
func (p *privateFuse) close(t *testing.T) {
	t.Helper()
	for pid := range processes() {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); ns == p.ns && pid != p.holder.Process.Pid {
			t.Errorf("process %d still running in the private namespace; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	p.holder.Process.Kill()
	p.holder.Wait()
	p.checkHostFuse(t)
}

// nobodysImage copies the corpus's ext2.vhd into a home of nobody's, with a
// mount point beside it, both owned by nobody.
func nobodysImage(t *testing.T) (img, mnt string) {
	t.Helper()
	src, err := os.ReadFile(corpusImage(t, "real/dfvfs/ext2.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	home := nobodyHome(t)
	img = filepath.Join(home, "user.vhd")
	os.WriteFile(img, src, 0o644)
	os.Chown(img, nobody, nobody)
	mnt = filepath.Join(home, "mnt")
	os.Mkdir(mnt, 0o755)
	os.Chown(mnt, nobody, nobody)
	return img, mnt
}
