package format

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// peerVHDXRaw reads the flat view of a VHDX file with qemu-img or 7zz.
func peerVHDXRaw(t *testing.T, tool, path string) []byte {
	t.Helper()
	_, err := exec.LookPath(tool)
	testenv.Require(t, err == nil, tool+" is not installed")
	var cmd *exec.Cmd
	out := filepath.Join(t.TempDir(), "peer.raw")
	switch tool {
	case "qemu-img":
		cmd = exec.Command(tool, "convert", "-f", "vhdx", "-O", "raw", path, out)
	case "7zz":
		cmd = exec.Command(tool, "e", "-tvhdx", "-so", filepath.Base(path))
		cmd.Dir = filepath.Dir(path)
	}
	var stdout bytes.Buffer
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, path, err, stderr.String())
	}
	if tool == "7zz" {
		return stdout.Bytes()
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vhdxInfo(t *testing.T, path string) *vhdx.Info {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := vhdx.Open(path, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	in, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// curHeader returns the current header of in.
func curHeader(t *testing.T, in *vhdx.Info) *vhdx.Header {
	t.Helper()
	for _, h := range in.Headers {
		if h.Current && h.Header != nil {
			return h.Header
		}
	}
	t.Fatalf("%s: no current header", in.Path)
	return nil
}

// metaBytes returns each metadata item of a file as "id/user/flags" → bytes.
func metaBytes(t *testing.T, in *vhdx.Info) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(in.Path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, it := range in.Metadata {
		k := it.ID.String() + "/" + it.Name
		if it.IsUser {
			k += "/user"
		}
		if it.IsVirtualDisk {
			k += "/vd"
		}
		if it.IsRequired {
			k += "/req"
		}
		m[k] = b[it.Off : it.Off+it.Length]
	}
	return m
}

func hostStored(t *testing.T, path string) (blocks, size int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512, fi.Size()
}

// TestCompactVHDX compacts dynamic, fixed and differencing VHDX files (512
// and 4096-byte sectors, 1 and 32 MiB blocks) holding random blocks, blocks
// written with zeros (stored zeros), blocks written then discarded (whole
// and half), and, in a child, zero sectors (whole blocks and single
// sectors) hiding the parent's data. After compaction the chain reads the
// model written here, as qemu-img and 7zz read the original, and so do
// qemu-img and 7zz reading the result; the file stores less (st_blocks) and
// is shorter (fixed: same size); qemu-img check and vhdiinfo accept it; the
// identity is kept (DataWriteGuid, creator, every metadata item byte for
// byte) and the FileWriteGuid is new; a child made over a dynamic file
// before its compaction still opens over it and reads as before.
func TestCompactVHDX(t *testing.T) {
	type tc struct {
		name string
		kind string // dynamic, fixed, child
		lss  int
		bs   int64
	}
	cases := []tc{
		{"dynamic-512-1M", "dynamic", 512, 1 << 20},
		{"dynamic-4096-32M", "dynamic", 4096, 32 << 20},
		{"fixed-512-1M", "fixed", 512, 1 << 20},
		{"fixed-4096-32M", "fixed", 4096, 32 << 20},
		{"child-512-1M", "child", 512, 1 << 20},
		{"child-4096-32M", "child", 4096, 32 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.lss), uint64(c.bs)))
			dir := t.TempDir()
			bs, ss := c.bs, int64(c.lss)
			size := 7*bs + 3*4096 // a partial last block
			if c.lss == 4096 {
				size = 7*bs + 1<<20 // 7-Zip refuses a 4096-sector disk that is not whole MiB
			}
			model := make([]byte, size)
			rnd := func(n int64) []byte {
				b := make([]byte, n)
				fillRandom(rng, b)
				return b
			}
			write := func(d *Disk, p []byte, off int64) {
				t.Helper()
				if _, err := d.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			}
			discard := func(d *Disk, off, n int64) {
				t.Helper()
				if err := d.Discard(off, n); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			}
			open := func(path string) *Disk {
				t.Helper()
				d, err := Open(path, nil)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			img := filepath.Join(dir, "disk.vhdx")
			var parentModel []byte
			if c.kind == "child" {
				parent := filepath.Join(dir, "parent.vhdx")
				if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: bs, SectorSize: c.lss}); err != nil {
					t.Fatal(err)
				}
				d := open(parent)
				for _, b := range []int64{0, 1, 2, 3, 5} { // block 4 and 6 stay empty
					write(d, rnd(bs), b*bs)
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				parentModel = bytes.Clone(model)
				if err := vhdx.Create(img, vhdx.CreateOptions{Parent: parent}); err != nil {
					t.Fatal(err)
				}
			} else if err := vhdx.Create(img, vhdx.CreateOptions{Size: size, BlockSize: bs, SectorSize: c.lss, Fixed: c.kind == "fixed"}); err != nil {
				t.Fatal(err)
			}
			d := open(img)
			write(d, rnd(bs), 0)                     // block 0: data
			write(d, make([]byte, bs), bs)           // block 1: zeros (over the parent's data in a child)
			write(d, rnd(bs), 2*bs)                  // block 2: data, half discarded
			discard(d, 2*bs, bs/2)                   //
			write(d, rnd(bs), 3*bs)                  // block 3: data, all discarded (ZERO in a child)
			discard(d, 3*bs, bs)                     //
			write(d, rnd(bs), 4*bs)                  // block 4: data, then stored zeros (nothing below)
			write(d, make([]byte, bs), 4*bs)         //
			write(d, rnd(3*ss), 5*bs+8*ss)           // block 5: a few sectors (PARTIALLY_PRESENT in a child)
			write(d, make([]byte, 2*ss), 5*bs+20*ss) //   and zero sectors hiding the parent's
			write(d, rnd(ss), size-ss)               // block 6 (partial): its last sector
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			// The original, as our reader and the peers read it.
			readAll := func(path string) []byte {
				t.Helper()
				d, err := Open(path, &Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				if ps := d.Check(); len(ps) > 0 {
					t.Fatalf("check %s: %v", path, ps)
				}
				b := make([]byte, d.Size())
				if _, err := d.ReadAt(b, 0); err != nil {
					t.Fatal(err)
				}
				return b
			}
			if !bytes.Equal(readAll(img), model) {
				t.Fatal("the image does not read as the model before compaction")
			}
			peers := []string{"7zz"}
			if c.lss == 512 && c.kind != "child" {
				peers = append(peers, "qemu-img") // qemu reads neither 4096-byte sectors nor children
			}
			peersBefore := map[string][]byte{}
			for _, tool := range peers {
				peersBefore[tool] = peerVHDXRaw(t, tool, img)
				if !bytes.Equal(peersBefore[tool], model) {
					t.Fatalf("%s does not read the original as the model", tool)
				}
			}
			// A child over the dynamic file, made before the compaction.
			var kid string
			var kidModel []byte
			if c.kind == "dynamic" {
				kid = filepath.Join(dir, "kid.vhdx")
				if err := vhdx.Create(kid, vhdx.CreateOptions{Parent: img}); err != nil {
					t.Fatal(err)
				}
				saved := bytes.Clone(model)
				kd := open(kid)
				write(kd, rnd(bs/2), bs/4)
				if err := kd.Close(); err != nil {
					t.Fatal(err)
				}
				kidModel, model = model, saved
			}
			infoBefore := vhdxInfo(t, img)
			metaBefore := metaBytes(t, infoBefore)
			stBefore, szBefore := hostStored(t, img)

			// In use (a read-write open holds the locks): refused, untouched.
			orig, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			busy := open(img)
			if _, err := Compact(img, CompactOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
				t.Errorf("compact of an image in use: %v", err)
			}
			busy.Close()
			if now, _ := os.ReadFile(img); !bytes.Equal(now, orig) {
				t.Fatal("a refused compaction changed the image")
			}
			// Through a symbolic link, with an unusual mode: the link stays,
			// the image keeps its mode.
			if err := os.Chmod(img, 0o640); err != nil {
				t.Fatal(err)
			}
			sym := filepath.Join(dir, "link.vhdx")
			if err := os.Symlink("disk.vhdx", sym); err != nil {
				t.Fatal(err)
			}
			var progress int64
			res, err := Compact(sym, CompactOptions{Progress: func(n int64) { progress += n }})
			if err != nil {
				t.Fatal(err)
			}
			if progress != size {
				t.Errorf("progress adds up to %d, want %d", progress, size)
			}
			if fi, err := os.Lstat(sym); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the symbolic link was replaced: %v", err)
			}
			if fi, _ := os.Stat(img); fi.Mode().Perm() != 0o640 {
				t.Errorf("mode %v after compaction, want 0640", fi.Mode().Perm())
			}
			stAfter, szAfter := hostStored(t, img)
			if res.Before != stBefore || res.After != stAfter || res.FileBefore != szBefore || res.FileAfter != szAfter {
				t.Errorf("result %+v; stat says %d→%d stored, %d→%d bytes", res, stBefore, stAfter, szBefore, szAfter)
			}
			if stAfter >= stBefore {
				t.Errorf("stored %d bytes before, %d after", stBefore, stAfter)
			}
			if c.kind == "fixed" {
				if szAfter != szBefore {
					t.Errorf("fixed file size %d → %d", szBefore, szAfter)
				}
			} else if szAfter >= szBefore {
				t.Errorf("file size %d before, %d after", szBefore, szAfter)
			}
			if got := readAll(img); !bytes.Equal(got, model) {
				t.Fatalf("the compacted image does not read as the model (first difference at %d)", firstDiffAt(got, model))
			}
			for _, tool := range peers {
				if !bytes.Equal(peerVHDXRaw(t, tool, img), peersBefore[tool]) {
					t.Fatalf("%s reads the compacted image otherwise than the original", tool)
				}
			}
			if len(peers) > 1 {
				if out, err := exec.Command("qemu-img", "check", "-f", "vhdx", img).CombinedOutput(); err != nil || !strings.Contains(string(out), "No errors were found") {
					t.Fatalf("qemu-img check: %v\n%s", err, out)
				}
			}
			if _, err := exec.LookPath("vhdiinfo"); err == nil || testenv.MustRun() {
				if out, err := exec.Command("vhdiinfo", img).CombinedOutput(); err != nil {
					t.Fatalf("vhdiinfo: %v\n%s", err, out)
				}
			}
			// Identity.
			infoAfter := vhdxInfo(t, img)
			hb, ha := curHeader(t, infoBefore), curHeader(t, infoAfter)
			if hb.DataWriteGUID != ha.DataWriteGUID {
				t.Errorf("DataWriteGuid %s → %s", hb.DataWriteGUID, ha.DataWriteGUID)
			}
			if c.kind == "fixed" {
				if hb.FileWriteGUID != ha.FileWriteGUID {
					t.Errorf("a fixed file's FileWriteGuid changed")
				}
			} else if hb.FileWriteGUID == ha.FileWriteGUID {
				t.Errorf("FileWriteGuid kept (%s): the file is another", ha.FileWriteGUID)
			}
			if infoAfter.Creator != infoBefore.Creator || infoAfter.BlockSize != bs || infoAfter.Type != infoBefore.Type {
				t.Errorf("creator/block size/type %q %d %s → %q %d %s", infoBefore.Creator, infoBefore.BlockSize, infoBefore.Type,
					infoAfter.Creator, infoAfter.BlockSize, infoAfter.Type)
			}
			metaAfter := metaBytes(t, infoAfter)
			if len(metaAfter) != len(metaBefore) {
				t.Errorf("metadata items %d → %d", len(metaBefore), len(metaAfter))
			}
			for k, v := range metaBefore {
				if !bytes.Equal(metaAfter[k], v) {
					t.Errorf("metadata item %s changed", k)
				}
			}
			if c.kind == "child" {
				// The parent's data must still be hidden where the child wrote zeros.
				if !bytes.Equal(model[bs:2*bs], make([]byte, bs)) || bytes.Equal(parentModel[bs:2*bs], model[bs:2*bs]) {
					t.Fatal("BUG in the test: block 1 should hide the parent's data")
				}
			}
			if kid != "" {
				if got := readAll(kid); !bytes.Equal(got, kidModel) {
					t.Fatalf("the child of the compacted file does not read as before (first difference at %d)", firstDiffAt(got, kidModel))
				}
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), "compact") {
					t.Errorf("temporary file %s left", e.Name())
				}
			}
		})
	}
}
