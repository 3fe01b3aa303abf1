package vhdx_test

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
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// These tests write images through this package and have qemu-img, 7-Zip
// and libvhdi read them: each peer reads the image before (a pristine copy)
// and after the writes, and what it reads after must be what it read before
// with the writes laid over it. The expected bytes never come from this
// package.

// peerStream returns the flat disk of the image at path as the peer reads it.
type peerStream func(t *testing.T, path string) io.ReadCloser

func qemuStream(t *testing.T, path string) io.ReadCloser {
	qemu := needTool(t, "qemu-img")
	out := filepath.Join(t.TempDir(), "flat.raw")
	if b, err := exec.Command(qemu, "convert", "-f", "vhdx", "-O", "raw", path, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v: %s", path, err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type cmdStream struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *strings.Builder
}

func (c *cmdStream) Close() error {
	io.Copy(io.Discard, c.ReadCloser)
	c.ReadCloser.Close()
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("%v: %s", err, c.stderr.String())
	}
	return nil
}

func sevenZipStream(t *testing.T, path string) io.ReadCloser {
	sz := needTool(t, "7zz")
	cmd := exec.Command(sz, "e", "-tvhdx", "-so", filepath.Base(path))
	cmd.Dir = filepath.Dir(path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &cmdStream{out, cmd, &stderr}
}

type mountStream struct {
	*os.File
	fm, mnt string
	t       *testing.T
}

func (m *mountStream) Close() error {
	m.File.Close()
	for i := 0; i < 50; i++ {
		if exec.Command(m.fm, "-u", m.mnt).Run() == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("could not unmount %s", m.mnt)
}

func libvhdiStream(depth int) peerStream {
	return func(t *testing.T, path string) io.ReadCloser {
		vm := needTool(t, "vhdimount")
		fm := needTool(t, "fusermount")
		_, err := os.Stat("/dev/fuse")
		testenv.Require(t, err == nil, "no /dev/fuse")
		mnt := t.TempDir()
		if b, err := exec.Command(vm, path, mnt).CombinedOutput(); err != nil {
			t.Fatalf("vhdimount: %v: %s", err, b)
		}
		f, err := os.Open(filepath.Join(mnt, fmt.Sprintf("vhdi%d", depth)))
		if err != nil {
			exec.Command(fm, "-u", mnt).Run()
			t.Fatal(err)
		}
		return &mountStream{f, fm, mnt, t}
	}
}

// copyTree copies the regular files of src into a new temporary directory,
// sparsely.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		err = testenv.WriteSparse(out, in)
		in.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// writeRandom opens path read-write, makes n random writes with below
// reading zeros or, for a child, what its parent chain reads (parentRead),
// checks the result clean on reopen, and returns the writes.
func writeRandom(t *testing.T, rng *rand.Rand, path string, n int, below io.ReaderAt) []crashWrite {
	t.Helper()
	l, _ := openRW(t, path)
	size, bs := l.Size(), int64(32<<20)
	if in, err := l.Info(); err == nil {
		bs = in.BlockSize
	}
	var ws []crashWrite
	for i := 0; i < n; i++ {
		off, p := randWrite(rng, size, bs, l.SectorSize())
		if _, err := l.WriteAt(p, off, below); err != nil {
			t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
		}
		ws = append(ws, crashWrite{off: off, p: p})
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	ro, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	mustClean(t, ro, "after the writes")
	ro.Close()
	return ws
}

// compareStreams checks that after reads as before with ws laid over it,
// over size bytes; it returns the sha256 of before.
func compareStreams(t *testing.T, who string, before, after io.Reader, size int64, ws []crashWrite) string {
	t.Helper()
	const chunk = 4 << 20
	a, b := make([]byte, chunk), make([]byte, chunk)
	h := sha256.New()
	for off := int64(0); off < size; off += chunk {
		n := int(min(chunk, size-off))
		if _, err := io.ReadFull(before, a[:n]); err != nil {
			t.Fatalf("%s: reading the pristine image at %d: %v", who, off, err)
		}
		h.Write(a[:n])
		if _, err := io.ReadFull(after, b[:n]); err != nil {
			t.Fatalf("%s: reading the written image at %d: %v", who, off, err)
		}
		for _, w := range ws {
			lo, hi := max(w.off, off), min(w.off+int64(len(w.p)), off+int64(n))
			if lo < hi {
				copy(a[lo-off:hi-off], w.p[lo-w.off:hi-w.off])
			}
		}
		if !bytes.Equal(a[:n], b[:n]) {
			t.Fatalf("%s reads the written image differently from the pristine one with the writes laid over, at byte %d", who, off+firstDiff(b[:n], a[:n]))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// compareSampled is compareStreams over the 1 MiB pieces the writes touch
// and 64 others, for peers that read at random.
func compareSampled(t *testing.T, who string, before, after io.ReaderAt, size int64, ws []crashWrite) {
	t.Helper()
	const piece = 1 << 20
	rng := rand.New(rand.NewPCG(4, 4))
	offs := map[int64]bool{}
	for _, w := range ws {
		for o := w.off / piece * piece; o < w.off+int64(len(w.p)); o += piece {
			offs[o] = true
		}
	}
	for i := 0; i < 64; i++ {
		offs[rng.Int64N(size/piece)*piece] = true
	}
	a, b := make([]byte, piece), make([]byte, piece)
	for off := range offs {
		n := min(piece, size-off)
		if _, err := before.ReadAt(a[:n], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := after.ReadAt(b[:n], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for _, w := range ws {
			lo, hi := max(w.off, off), min(w.off+int64(len(w.p)), off+n)
			if lo < hi {
				copy(a[lo-off:hi-off], w.p[lo-w.off:hi-w.off])
			}
		}
		if !bytes.Equal(a[:n], b[:n]) {
			t.Fatalf("%s reads the written image differently from the pristine one with the writes laid over, at byte %d", who, off+firstDiff(b[:n], a[:n]))
		}
	}
}

func checkPeers(t *testing.T, pristine, written string, size int64, ws []crashWrite, peers map[string]peerStream) {
	t.Helper()
	for name, ps := range peers {
		t.Run(name, func(t *testing.T) {
			before, after := ps(t, pristine), ps(t, written)
			compareStreams(t, name, before, after, size, ws)
			if err := before.Close(); err != nil && name != "7zz" {
				t.Fatal(err)
			}
			if err := after.Close(); err != nil && name != "7zz" {
				t.Fatal(err)
			}
		})
	}
}

func qemuCheck(t *testing.T, path string) {
	t.Helper()
	qemu := needTool(t, "qemu-img")
	if b, err := exec.Command(qemu, "check", "-f", "vhdx", path).CombinedOutput(); err != nil || !strings.Contains(string(b), "No errors were found") {
		t.Fatalf("qemu-img check %s: %v: %s", path, err, b)
	}
}

// TestWriteInteropQemuImages: images qemu-img creates (dynamic 1 and 32 MiB
// blocks, fixed with and without block_state_zero), written through this
// package, check clean in qemu-img and read as they should in qemu-img,
// 7-Zip and libvhdi.
func TestWriteInteropQemuImages(t *testing.T) {
	qemu := needTool(t, "qemu-img")
	for i, opts := range []string{
		"subformat=dynamic,block_size=1M",
		"subformat=dynamic,block_size=32M",
		"subformat=dynamic,block_size=1M,block_state_zero=off",
		"subformat=fixed,block_size=1M",
		"subformat=fixed,block_size=2M,block_state_zero=off",
	} {
		t.Run(opts, func(t *testing.T) {
			dir := t.TempDir()
			pristine := filepath.Join(dir, "pristine.vhdx")
			const size = 100 << 20
			if b, err := exec.Command(qemu, "create", "-q", "-f", "vhdx", "-o", opts, pristine, fmt.Sprint(size)).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, b)
			}
			dir2 := copyTree(t, dir)
			written := filepath.Join(dir2, "pristine.vhdx")
			ws := writeRandom(t, rand.New(rand.NewPCG(uint64(i), 77)), written, 40, nil)
			qemuCheck(t, written)
			checkPeers(t, pristine, written, size, ws, map[string]peerStream{"qemu-img": qemuStream, "7zz": sevenZipStream, "libvhdi": libvhdiStream(1)})
		})
	}
}

// TestWriteInteropBuilt: builder images qemu cannot make or read: a
// dynamic file of 4096-byte sectors (7-Zip, libvhdi) and a differencing
// child with its parent (7-Zip, libvhdi).
func TestWriteInteropBuilt(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 12))
	t.Run("dyn-4k", func(t *testing.T) {
		dir := t.TempDir()
		l := randomLayer(rng, "d.vhdx", 1, 40<<20+8192, 2<<20, 4096, false)
		l.userItem = false
		if err := writeChain(rng, dir, []*tLayer{l}); err != nil {
			t.Fatal(err)
		}
		dir2 := copyTree(t, dir)
		ws := writeRandom(t, rng, filepath.Join(dir2, "d.vhdx"), 40, nil)
		checkPeers(t, filepath.Join(dir, "d.vhdx"), filepath.Join(dir2, "d.vhdx"), l.size, ws,
			map[string]peerStream{"7zz": sevenZipStream, "libvhdi": libvhdiStream(1)})
	})
	for _, lss := range []int{512, 4096} {
		t.Run(fmt.Sprint("child-", lss), func(t *testing.T) {
			dir := t.TempDir()
			base := randomLayer(rng, "base.vhdx", 5, 70<<20, 1<<20, lss, false)
			base.userItem = false
			child := randomLayer(rng, "child.vhdx", 6, 70<<20, 2<<20, lss, true)
			child.userItem = false
			for b, s := range child.states {
				if s != tFully && s != tPartial {
					child.states[b] = tNotPresent // libvhdi reads the parent for ZERO blocks of a child
				}
			}
			child.locator = []tKV{{"parent_linkage", tGUIDText(base.dataWrite)}, {"relative_path", `.\base.vhdx`},
				{"absolute_win32_path", `C:\VMs\base.vhdx`}}
			if err := writeChain(rng, dir, []*tLayer{child, base}); err != nil {
				t.Fatal(err)
			}
			dir2 := copyTree(t, dir)
			// Writes into NOT_PRESENT and PARTIALLY_PRESENT blocks only:
			// a ZERO block we make FULLY_PRESENT is fine, but libvhdi
			// would read the pristine file's ZERO blocks from the parent.
			ws := writeRandom(t, rng, filepath.Join(dir2, "child.vhdx"), 40, modelBelow([]*tLayer{base}))
			checkPeers(t, filepath.Join(dir, "child.vhdx"), filepath.Join(dir2, "child.vhdx"), child.size, ws,
				map[string]peerStream{"7zz": sevenZipStream, "libvhdi": libvhdiStream(2)})
		})
	}
}

// TestWriteInteropCorpus: copies of real images (a Hyper-V AVHDX child with
// its parent, Windows fixed and dynamic files, a qemu file with a pending
// log) written through this package read as they should in the peers that
// read them; the pristine copy's read matches the corpus hash first.
func TestWriteInteropCorpus(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	cases := map[string]testenv.Case{}
	for _, c := range testenv.Cases(t, corpus) {
		cases[c.Name] = c
	}
	type item struct {
		name  string
		depth int
		peers []string
	}
	for _, it := range []item{
		{"dissect-avhdx-synthparent/differencing", 2, []string{"7zz", "libvhdi"}},
		{"dissect-hypervisor/fixed", 1, []string{"qemu-img", "7zz", "libvhdi"}},
		{"dissect-hypervisor/dynamic", 1, []string{"qemu-img", "7zz", "libvhdi"}},
		{"vhdx-qemu/dyn-256M", 1, []string{"qemu-img", "7zz", "libvhdi"}},
		{"vhdx-qemu/fixed-1M-nozero", 1, []string{"qemu-img", "libvhdi"}},
		{"qemu-iotests/iotest-dynamic-1G", 1, []string{"qemu-img", "7zz", "libvhdi"}},
		// One header torn (as a crash during a header update leaves it):
		// writable, and the first write's header update mends it.
		{"vhdx-qemu/torn-older-header", 1, []string{"qemu-img"}},
		{"vhdx-qemu/torn-current-header", 1, []string{"qemu-img"}},
	} {
		t.Run(it.name, func(t *testing.T) {
			c, ok := cases[it.name]
			if !ok {
				t.Fatalf("no case %s in cases.json", it.name)
			}
			src := testenv.Unpack(t, corpus, c.Open)
			pristineDir := copyTree(t, filepath.Dir(src))
			writtenDir := copyTree(t, filepath.Dir(src))
			name := filepath.Base(src)
			var below io.ReaderAt
			if it.depth > 1 {
				ch, err := openChain(filepath.Join(pristineDir, name), openFile)
				if err != nil {
					t.Fatal(err)
				}
				defer ch.Close()
				below = chainReader{ch[1:]}
			}
			ws := writeRandom(t, rand.New(rand.NewPCG(9, uint64(len(it.name)))), filepath.Join(writtenDir, name), 30, below)
			all := map[string]peerStream{"qemu-img": qemuStream, "7zz": sevenZipStream, "libvhdi": libvhdiStream(it.depth)}
			for _, p := range it.peers {
				t.Run(p, func(t *testing.T) {
					ps := all[p]
					var before io.ReadCloser
					if p == "libvhdi" || c.Size <= 1<<30 {
						before = ps(t, filepath.Join(pristineDir, name))
					}
					after := ps(t, filepath.Join(writtenDir, name))
					if p == "libvhdi" && c.Size > 1<<30 {
						// A mounted file reads at random: compare the written
						// ranges and samples, not all 8 GiB (7-Zip streams it all).
						compareSampled(t, p, before.(io.ReaderAt), after.(io.ReaderAt), c.Size, ws)
						before.Close()
						after.Close()
						return
					}
					if c.Size > 1<<30 {
						// Stream the pristine image as this package reads it
						// rather than through the peer a second time: its hash
						// is checked against the corpus's below all the same.
						ch, err := openChain(filepath.Join(pristineDir, name), openFile)
						if err != nil {
							t.Fatal(err)
						}
						defer ch.Close()
						before = io.NopCloser(io.NewSectionReader(chainReader{ch}, 0, c.Size))
					}
					sum := compareStreams(t, p, before, after, c.Size, ws)
					before.Close()
					after.Close()
					if sum != c.SHA256 {
						t.Fatalf("%s reads the pristine copy as %s; the corpus says %s", p, sum, c.SHA256)
					}
				})
			}
			if it.depth == 1 {
				qemuCheck(t, filepath.Join(writtenDir, name))
			}
		})
	}
}

// TestWriteLogReplayCorpus: a read-write open of qemu's image with a pending
// log replays it into the file: the file then reads as the corpus says
// (through this package and qemu-img), has no log, checks clean in
// qemu-img, and keeps its DataWriteGuid.
func TestWriteLogReplayCorpus(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	cases := map[string]testenv.Case{}
	for _, c := range testenv.Cases(t, corpus) {
		cases[c.Name] = c
	}
	for _, name := range []string{"vhdx-qemu/dirty-log", "qemu-iotests/iotest-dirtylog-10G-4M"} {
		t.Run(name, func(t *testing.T) {
			c, ok := cases[name]
			if !ok {
				t.Fatalf("no case %s", name)
			}
			src := testenv.Unpack(t, corpus, c.Open)
			dir := t.TempDir()
			path := filepath.Join(dir, filepath.Base(src))
			in, err := os.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			out, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			err = testenv.WriteSparse(out, in)
			in.Close()
			out.Close()
			if err != nil {
				t.Fatal(err)
			}
			ro, err := vhdx.Open(path, mustOpen(t, path), vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			bi, _ := ro.Info()
			ro.Close()
			if bi.Log.State == "empty" {
				t.Fatal("the image has no pending log")
			}
			l, _ := openRW(t, path)
			ai, _ := l.Info()
			l.Close()
			cur := func(in *vhdx.Info) *vhdx.Header {
				for _, h := range in.Headers {
					if h.Current {
						return h.Header
					}
				}
				return nil
			}
			if ai.Log.State != "empty" || cur(ai).DataWriteGUID != cur(bi).DataWriteGUID {
				t.Fatalf("after the replay: log %q, DataWriteGuid %s (was %s)", ai.Log.State, cur(ai).DataWriteGUID, cur(bi).DataWriteGUID)
			}
			qemuCheck(t, path)
			f := qemuStream(t, path)
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
			if got := hex.EncodeToString(h.Sum(nil)); got != c.SHA256 {
				t.Fatalf("qemu-img reads the replayed file as %s; the corpus says %s", got, c.SHA256)
			}
		})
	}
}

// chainReader reads a test chain's flat content (the parents of a written
// child: this package's reading of them, checked against the corpus hash).
type chainReader struct{ c chain }

func (r chainReader) ReadAt(p []byte, off int64) (int, error) {
	pos := 0
	err := r.c.walk(0, off, int64(len(p)), func(l layer.Layer, fileOff, n int64) error {
		dst := p[pos : pos+int(n)]
		pos += int(n)
		if l == nil {
			clear(dst)
			return nil
		}
		return l.ReadData(dst, fileOff)
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// TestWriteCreated: images this package's Create makes (dynamic with
// 4096-byte sectors, fixed, and a child over a parent written through this
// package first), written through the layer, read as they should in the
// peers that read them; qemu-img checks the 512-byte ones clean.
func TestWriteCreated(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	mk := func(t *testing.T, dir, name string, o vhdx.CreateOptions) string {
		p := filepath.Join(dir, name)
		if err := vhdx.Create(p, o); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("dynamic-4k", func(t *testing.T) {
		dir := t.TempDir()
		mk(t, dir, "d.vhdx", vhdx.CreateOptions{Size: 90 << 20, BlockSize: 2 << 20, SectorSize: 4096})
		dir2 := copyTree(t, dir)
		ws := writeRandom(t, rng, filepath.Join(dir2, "d.vhdx"), 40, nil)
		checkPeers(t, filepath.Join(dir, "d.vhdx"), filepath.Join(dir2, "d.vhdx"), 90<<20, ws,
			map[string]peerStream{"7zz": sevenZipStream, "libvhdi": libvhdiStream(1)})
	})
	t.Run("fixed", func(t *testing.T) {
		dir := t.TempDir()
		mk(t, dir, "f.vhdx", vhdx.CreateOptions{Fixed: true, Size: 20 << 20, BlockSize: 1 << 20})
		dir2 := copyTree(t, dir)
		ws := writeRandom(t, rng, filepath.Join(dir2, "f.vhdx"), 40, nil)
		qemuCheck(t, filepath.Join(dir2, "f.vhdx"))
		checkPeers(t, filepath.Join(dir, "f.vhdx"), filepath.Join(dir2, "f.vhdx"), 20<<20, ws,
			map[string]peerStream{"qemu-img": qemuStream, "7zz": sevenZipStream, "libvhdi": libvhdiStream(1)})
	})
	t.Run("child", func(t *testing.T) {
		dir := t.TempDir()
		base := mk(t, dir, "base.vhdx", vhdx.CreateOptions{Size: 70 << 20, BlockSize: 1 << 20})
		pws := writeRandom(t, rng, base, 30, nil)
		qemuCheck(t, base)
		mk(t, dir, "child.avhdx", vhdx.CreateOptions{Parent: base})
		dir2 := copyTree(t, dir)
		// below: the parent as qemu-img reads it.
		f := qemuStream(t, base)
		parent, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		zero := make([]byte, len(parent))
		compareStreams(t, "qemu-img (parent)", bytes.NewReader(zero), bytes.NewReader(parent), int64(len(parent)), pws)
		ws := writeRandom(t, rng, filepath.Join(dir2, "child.avhdx"), 40, bytes.NewReader(parent))
		checkPeers(t, filepath.Join(dir, "child.avhdx"), filepath.Join(dir2, "child.avhdx"), 70<<20, ws,
			map[string]peerStream{"7zz": sevenZipStream, "libvhdi": libvhdiStream(2)})
	})
}
