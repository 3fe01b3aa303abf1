//go:build linux

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// requireTools skips (fails in CI) unless every tool is on PATH.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
}

// sfdiskPart is a partition as `sfdisk --json` lists it (in sectors).
type sfdiskPart struct {
	Node  string `json:"node"`
	Start int64  `json:"start"`
	Size  int64  `json:"size"`
	Type  string `json:"type"`
}

// sfdiskTable lists the partitions of file as sfdisk reads them: the
// independent source the partition files are checked against.
func sfdiskTable(t *testing.T, file string) []sfdiskPart {
	t.Helper()
	var j struct {
		PT struct {
			SectorSize int64        `json:"sectorsize"`
			Partitions []sfdiskPart `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "sfdisk", "--json", file)), &j); err != nil {
		t.Fatal(err)
	}
	if j.PT.SectorSize != 0 && j.PT.SectorSize != 512 {
		t.Fatalf("sfdisk: sector size %d", j.PT.SectorSize)
	}
	return j.PT.Partitions
}

// partitionedImage creates a dynamic VHD of 64 MiB and writes an MBR with
// two partitions into it through disk.raw with sfdisk: p1 (type 7, NTFS)
// sectors 2048 to 34815 (16 MiB), p2 (type 83, Linux) the rest. It returns the image path;
// nothing is left mounted.
func partitionedImage(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "parts.vhd")
	mustRun(t, bin("vhd"), "create", img, "64M")
	m := mountImage(t, img)
	if ents := listDir(t, m.dir); !slices.Equal(ents, []string{"disk.raw"}) {
		t.Errorf("a blank disk shows %v, want disk.raw alone", ents)
	}
	// No table is no error: nothing on stderr (the --log file notes it,
	// see TestMountHelper).
	if strings.Contains(m.out.String(), "partition") {
		t.Errorf("mounting a blank disk reported %q", m.out)
	}
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", m.file)
	cmd.Stdin = strings.NewReader("label: dos\nstart=2048, size=32768, type=7\nstart=34816, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	// The table is read at mount: the new partitions appear only after a
	// remount.
	if ents := listDir(t, m.dir); !slices.Equal(ents, []string{"disk.raw"}) {
		t.Errorf("after writing a table through disk.raw, before remounting: %v, want disk.raw alone", ents)
	}
	m.unmount(t)
	return img
}

// listDir returns the sorted names in dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// sameWindow checks that file holds the bytes of disk at [start, start+size)
// and is exactly size bytes long.
func sameWindow(t *testing.T, disk, file string, start, size int64) {
	t.Helper()
	d, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Size() != size {
		t.Errorf("%s: size %d, want %d", file, fi.Size(), size)
	}
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(a)) {
		n := min(int64(len(a)), size-off)
		if _, err := d.ReadAt(a[:n], start+off); err != nil {
			t.Fatalf("%s at %d: %v", disk, start+off, err)
		}
		if _, err := io.ReadFull(f, b[:n]); err != nil {
			t.Fatalf("%s at %d: %v", file, off, err)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			t.Fatalf("%s differs from %s at [%d, %d) from offset %d", file, disk, start, start+size, off)
		}
	}
	if n, err := f.Read(b); n != 0 || err != io.EOF {
		t.Errorf("%s: read at its end: %d, %v; want EOF", file, n, err)
	}
}

// TestPartitionFiles: an MBR written with sfdisk through disk.raw gives p1
// and p2 after a remount, at the offsets and sizes sfdisk reports; an ext4
// made with mkfs.ext4 on p2 (a plain file, no loop device) passes e2fsck;
// p1 and p2 hold exactly disk.raw's windows; writes stop at the end of a
// partition; --ro, --no-partitions and -o no_partitions do what they say.
func TestPartitionFiles(t *testing.T) {
	requireMount(t)
	requireTools(t, "sfdisk", "mkfs.ext4", "e2fsck", "debugfs")
	dir := tempDir(t)
	img := partitionedImage(t, dir)
	loopsBefore := loopDevices(t)

	m := mountImage(t, img)
	if ents := listDir(t, m.dir); !slices.Equal(ents, []string{"disk.raw", "p1", "p2"}) {
		t.Fatalf("mount shows %v, want disk.raw p1 p2", ents)
	}
	table := sfdiskTable(t, m.file)
	if len(table) != 2 || table[0].Start != 2048 || table[0].Size != 32768 || table[1].Start != 34816 {
		t.Fatalf("sfdisk lists %+v", table)
	}
	// Read disk.raw and the partition files whole first, so the kernel
	// holds their pages: what follows must never read stale ones through
	// another name of the same bytes after a reopen.
	p1, p2 := filepath.Join(m.dir, "p1"), filepath.Join(m.dir, "p2")
	for _, p := range []string{m.file, p1, p2} {
		sha256File(t, p)
	}
	// disk.raw open (and read, so cached) while p1 is written: reads
	// through the open disk.raw see the new bytes.
	raw, err := os.Open(m.file)
	if err != nil {
		t.Fatal(err)
	}
	p1Start := table[0].Start * 512
	before := make([]byte, 8192)
	raw.ReadAt(before, p1Start)
	if w, err := os.OpenFile(p1, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else if _, err := w.WriteAt(bytes.Repeat([]byte("p1"), 4096), 0); err != nil || w.Close() != nil {
		t.Fatal(err)
	}
	after := make([]byte, 8192)
	if _, err := raw.ReadAt(after, p1Start); err != nil || !bytes.Equal(after, bytes.Repeat([]byte("p1"), 4096)) {
		t.Errorf("disk.raw, open while p1 was written, reads %q... (%v)", after[:16], err)
	}
	raw.Close()
	// Write a pattern into p1 and make an ext4 on p2 holding a file.
	pattern := make([]byte, 3<<20)
	for i := range pattern {
		pattern[i] = byte(i*7 + i/4096)
	}
	f, err := os.OpenFile(p1, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern, 1<<20); err != nil {
		t.Fatal(err)
	}
	// At the end of p1: a write across it is short, one at it is ENOSPC.
	p1Size := table[0].Size * 512
	// (pwrite(2) itself: os.File.WriteAt would retry the rest.)
	if n, err := syscall.Pwrite(int(f.Fd()), []byte("abcd"), p1Size-2); n != 2 || err != nil {
		t.Errorf("write across p1's end: %d, %v; want 2 bytes written", n, err)
	}
	if n, err := syscall.Pwrite(int(f.Fd()), []byte("x"), p1Size); n > 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write at p1's end: %d, %v; want ENOSPC", n, err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync p1: %v", err)
	}
	f.Close()
	src := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "hello.txt"), []byte("hello from p2\n"), 0o644)
	mustRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", src, "-L", "parttest", p2)
	mustRun(t, "e2fsck", "-fn", p2)
	if out := mustRun(t, "debugfs", "-R", "cat /sub/hello.txt", p2); !strings.Contains(out, "hello from p2") {
		t.Errorf("debugfs cat on p2: %q", out)
	}
	for i, p := range []string{p1, p2} {
		sameWindow(t, m.file, p, table[i].Start*512, table[i].Size*512)
	}
	// The pattern is in disk.raw at p1's start + 1 MiB, and the bytes
	// written across p1's end stop there: p2's first sector is not "cd".
	got := make([]byte, len(pattern))
	if d, err := os.Open(m.file); err == nil {
		d.ReadAt(got, table[0].Start*512+1<<20)
		tail := make([]byte, 4)
		d.ReadAt(tail, p1Size-2+table[0].Start*512)
		d.Close()
		if string(tail[:2]) != "ab" || string(tail[2:]) == "cd" {
			t.Errorf("bytes at p1's end in disk.raw: %q", tail)
		}
	}
	if !bytes.Equal(got, pattern) {
		t.Error("the pattern written through p1 is not in disk.raw at p1's offset")
	}
	// And the other way: bytes written through disk.raw are what p1 reads
	// when opened again (its pages were read above).
	if d, err := os.OpenFile(m.file, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		if _, err := d.WriteAt([]byte("through disk.raw"), table[0].Start*512+4096); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	if b, err := os.ReadFile(p1); err != nil || string(b[4096:4096+16]) != "through disk.raw" {
		t.Errorf("p1 after a write through disk.raw: %q, %v", b[4096:4096+16], err)
	}
	// SEEK_DATA on p2 (ext4 wrote its metadata at the start) answers a
	// data offset within p2.
	if f, err := os.Open(p2); err == nil {
		off, err := f.Seek(0, 3 /* SEEK_DATA */)
		if err != nil || off != 0 {
			t.Errorf("SEEK_DATA on p2: %d, %v; want 0 (the superblock area)", off, err)
		}
		f.Close()
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p2, &st); err != nil || st.Blocks <= 0 || st.Blocks*512 > st.Size {
		t.Errorf("p2 st_blocks %d (size %d): %v", st.Blocks, st.Size, err)
	}
	m.unmount(t)
	if out := m.out.String(); strings.Contains(out, "partition") || strings.Contains(out, "error") {
		t.Errorf("the server reported %q", out)
	}

	// Read-only: the partition files are 0444 and refuse writing opens;
	// e2fsck reads the filesystem the previous mount wrote.
	ro := mountImage(t, img, "--ro")
	for _, p := range []string{"p1", "p2"} {
		path := filepath.Join(ro.dir, p)
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s on a read-only mount: %v, %v", p, fi.Mode(), err)
		}
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			f.Close()
			t.Errorf("opened %s for writing on a read-only mount", p)
		} else if !errors.Is(err, syscall.EROFS) {
			t.Errorf("opening %s for writing: %v, want EROFS", p, err)
		}
	}
	mustRun(t, "e2fsck", "-fn", filepath.Join(ro.dir, "p2"))
	ro.unmount(t)

	for _, args := range [][]string{{"--no-partitions"}, {"-o", "ro,no_partitions"}} {
		m := mountImage(t, img, args...)
		if ents := listDir(t, m.dir); !slices.Equal(ents, []string{"disk.raw"}) {
			t.Errorf("%v: mount shows %v, want disk.raw alone", args, ents)
		}
		m.unmount(t)
	}
	if after := loopDevices(t); !slices.Equal(after, loopsBefore) {
		t.Errorf("loop devices changed: %v, then %v", loopsBefore, after)
	}
}

// loopDevices lists the attached loop devices (the tests here must use none).
func loopDevices(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME").Output()
	if err != nil {
		return nil
	}
	return strings.Fields(string(out))
}

// fusermountPath returns a PATH under which `fusermount` is fusermount3:
// fuse2fs built on libfuse 2 (Debian 12's) runs `fusermount` to mount as an
// ordinary user, which the fuse3 package does not install (fusermount3
// speaks the same protocol). The link is made on every machine, so the test
// does not depend on one having been made by hand.
func fusermountPath(t *testing.T) string {
	t.Helper()
	fm3, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Fatal(err)
	}
	d := tempDir(t)
	os.Chmod(d, 0o755)
	if err := os.Symlink(fm3, filepath.Join(d, "fusermount")); err != nil {
		t.Fatal(err)
	}
	return d + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// rootlessSetup makes, as root, a partitioned image whose p1 is an empty
// NTFS and p2 an ext4 holding /sub/hello.txt, owned by nobody in a
// directory nobody owns, with the mountpoints mnt, fs and win in it.
func rootlessSetup(t *testing.T) (home, img string) {
	t.Helper()
	requireTools(t, "sfdisk", "mkfs.ext4", "e2fsck", "debugfs", "fuse2fs", "mkntfs", "ntfs-3g", "ntfscat")
	home = nobodyHome(t)
	img = partitionedImage(t, home)
	m := mountImage(t, img)
	src := filepath.Join(tempDir(t), "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "hello.txt"), []byte("hello from p2\n"), 0o644)
	mustRun(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", src, filepath.Join(m.dir, "p2"))
	mustRun(t, "mkntfs", "-q", "-Q", "-F", "-L", "parttest", filepath.Join(m.dir, "p1"))
	m.unmount(t)
	os.Chown(img, nobody, nobody)
	for _, d := range []string{"mnt", "fs", "win"} {
		os.Mkdir(filepath.Join(home, d), 0o755)
		os.Chown(filepath.Join(home, d), nobody, nobody)
	}
	return home, img
}

// rootlessCheck mounts img as root afterwards and checks that p2 is a clean
// ext4 and that the file the rootless run wrote is in p2 (ext4) and, with
// ntfs, in p1 (NTFS), read with debugfs and ntfscat on the partition files.
func rootlessCheck(t *testing.T, img, name, want string, ntfs bool) {
	t.Helper()
	m := mountImage(t, img, "--ro")
	p1, p2 := filepath.Join(m.dir, "p1"), filepath.Join(m.dir, "p2")
	mustRun(t, "e2fsck", "-fn", p2)
	if out := mustRun(t, "debugfs", "-R", "cat /"+name, p2); !strings.Contains(out, want) {
		t.Errorf("%s in p2, written rootless: %q, want %q", name, out, want)
	}
	if ntfs {
		if out := mustRun(t, "ntfscat", p1, name); !strings.Contains(out, want) {
			t.Errorf("%s in p1 (NTFS), written rootless: %q, want %q", name, out, want)
		}
	}
	m.unmount(t)
}

// killLeft kills (by pid) any process still running whose arguments name
// dir: a server or fuse2fs a failed script left behind.
func killLeft(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var left []int
		for pid, args := range processes() {
			if strings.Contains(strings.Join(args, " "), dir+"/") && pid != os.Getpid() {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes still running on %s: %v; killing them", dir, left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
	}
}

// rootlessScript is what the ordinary user runs: mount the image (with
// $VHDMOUNT_OPTS), mount the ext4 in p2 with fuse2fs, read a file, write
// one; with NTFS set, mount the NTFS in p1 with ntfs-3g and write the file
// there too; unmount everything. The EXIT trap unmounts whatever is still
// mounted, pass or fail. UMOUNT is the unmount command (fusermount3 -u on
// a host, umount as the mapped root of a user namespace).
const rootlessScript = `
mnt=$HOME_DIR/mnt fs=$HOME_DIR/fs win=$HOME_DIR/win
trap 'rc=$?; set +e; $UMOUNT "$fs" 2>/dev/null; $UMOUNT "$win" 2>/dev/null; $UMOUNT "$mnt" 2>/dev/null; exit $rc' EXIT
"$VHDMOUNT" $VHDMOUNT_OPTS "$IMG" "$mnt"
ls "$mnt" | tr '\n' ' '; echo
fuse2fs -o fakeroot "$mnt/p2" "$fs"
grep " $fs fuse" /proc/self/mounts || { echo "fuse2fs did not mount $fs"; exit 1; }
cat "$fs/sub/hello.txt"
echo "written $WHO" > "$fs/rootless.txt"
sync "$fs/rootless.txt"
$UMOUNT "$fs"
if [ -n "$NTFS" ]; then
	ntfs-3g "$mnt/p1" "$win"
	grep " $win fuse" /proc/self/mounts || { echo "ntfs-3g did not mount $win"; exit 1; }
	echo "written $WHO" > "$win/rootless.txt"
	$UMOUNT "$win"
fi
# fuse2fs and ntfs-3g close p2 and p1 a moment after their unmount: until
# then $mnt is busy.
i=0
until $UMOUNT "$mnt" 2>/dev/null; do
	i=$((i+1)); [ $i -lt 100 ] || { $UMOUNT "$mnt"; exit 1; }
	sleep 0.1
done
echo done
`

// rootlessRun runs prelude and rootlessScript as nobody in ns, with env
// (NAME=value) after the common variables and wrap (a command such as
// unshare) around the shell, then checks that it did everything, that nothing is left mounted
// and that no loop device was attached.
func rootlessRun(t *testing.T, ns *privateFuse, home, img string, env, wrap []string, prelude string) {
	t.Helper()
	args := append([]string{"env", "-i", "HOME_DIR=" + home, "IMG=" + img, "VHDMOUNT=" + bin("vhdmount")}, env...)
	args = append(append(args, wrap...), "sh", "-ec", prelude+rootlessScript)
	loopsBefore := loopDevices(t)
	out, err := ns.asNobody(args...).CombinedOutput()
	t.Logf("%s", out)
	if err != nil || !strings.Contains(string(out), "disk.raw p1 p2") || !strings.Contains(string(out), "hello from p2") || !strings.HasSuffix(string(out), "done\n") {
		t.Fatalf("rootless run: %v", err)
	}
	for _, d := range []string{"mnt", "fs", "win"} {
		if _, ok := ns.mountedAt(filepath.Join(home, d)); ok {
			t.Errorf("%s still mounted", d)
		}
	}
	if after := loopDevices(t); !slices.Equal(after, loopsBefore) {
		t.Errorf("loop devices changed: %v, then %v", loopsBefore, after)
	}
	ns.checkHostFuse(t)
	killLeft(t, home)
}

// TestRootlessFuse2fs: an ordinary user (nobody) mounts a partitioned image
// through fusermount3 and opens the ext4 in p2 with fuse2fs, with no root
// and no loop device, reads a file and writes one, and unmounts both; the
// host runs in a private mount namespace whose /dev/fuse is mode 0666 (see
// newPrivateFuse). The written file is then read back as root.
func TestRootlessFuse2fs(t *testing.T) {
	requireMount(t)
	ns := newPrivateFuse(t, 0o666)
	home, img := rootlessSetup(t)
	t.Cleanup(func() { killLeft(t, home) })
	rootlessRun(t, ns, home, img, []string{"PATH=" + fusermountPath(t), "UMOUNT=fusermount3 -u", "WHO=by nobody"}, nil, "")
	rootlessCheck(t, img, "rootless.txt", "written by nobody", false)
}

// TestRootlessNTFS: the same with the NTFS in p1 opened by ntfs-3g too.
// Debian's ntfs-3g is setuid root and opens the partition file as root,
// which a FUSE mount refuses unless it allows other users: vhdmount runs
// with --allow-other, which an ordinary user may give when /etc/fuse.conf
// has user_allow_other (here a file of the test, bind-mounted in the
// private namespace).
func TestRootlessNTFS(t *testing.T) {
	requireMount(t)
	ns := newPrivateFuse(t, 0o666)
	conf := filepath.Join(tempDir(t), "fuse.conf")
	os.WriteFile(conf, []byte("user_allow_other\n"), 0o644)
	ns.setup(t, fmt.Sprintf("touch /etc/fuse.conf && mount --bind %s /etc/fuse.conf", conf))
	home, img := rootlessSetup(t)
	t.Cleanup(func() { killLeft(t, home) })
	rootlessRun(t, ns, home, img, []string{"PATH=" + fusermountPath(t), "UMOUNT=fusermount3 -u", "WHO=by nobody", "NTFS=1", "VHDMOUNT_OPTS=--allow-other"}, nil, "")
	rootlessCheck(t, img, "rootless.txt", "written by nobody", true)
}

// TestUsernsFuse2fs: the same inside an unprivileged user namespace made by
// an ordinary user (unshare --user --map-root-user --mount), as rootless
// containers run: vhdmount and fuse2fs mount with mount(2) as the
// namespace's root, without fusermount3's setuid and without loop devices.
// (ntfs-3g fails there: it calls setgroups(2), which a namespace made by
// --map-root-user denies.)
func TestUsernsFuse2fs(t *testing.T) {
	requireMount(t)
	ns := newPrivateFuse(t, 0o666)
	out, err := ns.asNobody("unshare", "--user", "--map-root-user", "--mount", "true").CombinedOutput()
	testenv.Require(t, err == nil, fmt.Sprintf("an ordinary user cannot make a user namespace here: %v: %s", err, out))
	home, img := rootlessSetup(t)
	t.Cleanup(func() { killLeft(t, home) })
	rootlessRun(t, ns, home, img, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "UMOUNT=umount", "WHO=in a user namespace"},
		[]string{"unshare", "--user", "--map-root-user", "--mount"}, `[ "$(id -u)" = 0 ]; `)
	rootlessCheck(t, img, "rootless.txt", "written in a user namespace", false)
}

// TestPartitionTableDamaged: a protective MBR with no GPT behind it (written
// through disk.raw) is reported when the image is mounted again, and the
// mount serves disk.raw alone.
func TestPartitionTableDamaged(t *testing.T) {
	requireMount(t)
	img := filepath.Join(tempDir(t), "gpt.vhd")
	mustRun(t, bin("vhd"), "create", img, "8M")
	m := mountImage(t, img)
	s0 := make([]byte, 512)
	e := s0[446:]
	e[4] = 0xEE                        // type: GPT protective
	e[8], e[12], e[13] = 1, 0xFF, 0x3F // sectors 1 to 16383
	s0[510], s0[511] = 0x55, 0xAA
	if f, err := os.OpenFile(m.file, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else if _, err := f.WriteAt(s0, 0); err != nil || f.Close() != nil {
		t.Fatal(err)
	}
	m.unmount(t)
	m = mountImage(t, img)
	if ents := listDir(t, m.dir); !slices.Equal(ents, []string{"disk.raw"}) {
		t.Errorf("mount shows %v, want disk.raw alone", ents)
	}
	if sum, n := sha256File(t, m.file); n != 8<<20 || sum == "" {
		t.Errorf("disk.raw: %d bytes", n)
	}
	m.unmount(t)
	if out := m.out.String(); !strings.Contains(out, "partition table not used, no partition files: partition: gpt:") {
		t.Errorf("the server reported %q; want why the table is not used", out)
	}
}
