package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestMain runs the tests, or, when started by vhdCommand, is the vhd command.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
	}
	testenv.Main(m)
}

func vhd(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("vhd %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

func needTool(t *testing.T, name string) {
	t.Helper()
	_, err := exec.LookPath(name)
	testenv.Require(t, err == nil, name+" is not installed (apt-get install qemu-utils 7zip libvhdi-utils)")
}

// qemuRead returns qemu-img's view of a fixed or dynamic VHD, sized from
// current_size (qemu 7 uses CHS for creators it does not know, like ours).
func qemuRead(t *testing.T, path string) []byte {
	t.Helper()
	needTool(t, "qemu-img")
	out := filepath.Join(t.TempDir(), "qemu.raw")
	cmd := exec.Command("qemu-img", "convert", "--image-opts", "driver=vpc,force_size_calc=current_size,file.filename="+path, "-O", "raw", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sevenZipRead returns 7-Zip's view of any VHD, differencing included.
func sevenZipRead(t *testing.T, path string) []byte {
	t.Helper()
	needTool(t, "7zz")
	cmd := exec.Command("7zz", "e", "-tvhd", "-so", path)
	cmd.Dir = filepath.Dir(path)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("7zz: %v: %s", err, errb.String())
	}
	return b
}

// writeModel writes random data at random places (sub-sector, unaligned,
// whole blocks) through format, and applies the same writes to model.
func writeModel(t *testing.T, rng *rand.Rand, path string, model []byte, n int) {
	t.Helper()
	d, err := format.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for range n {
		off := rng.Int64N(d.Size())
		ln := min(1+rng.Int64N(3<<20), d.Size()-off)
		if rng.IntN(2) == 0 {
			ln = min(1+rng.Int64N(600), d.Size()-off)
		}
		p := make([]byte, ln)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func sameBytes(t *testing.T, who string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", who, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: differs first at byte %d (sector %d)", who, i, i/512)
			}
		}
	}
}

// TestPeersReadOurImages: images made by `vhd create` and written by us read
// the same in qemu-img (fixed, dynamic) and 7-Zip (all types, chains too).
func TestPeersReadOurImages(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 51))
	dir := t.TempDir()
	const size = 20<<20 + 1536
	for _, c := range []struct{ name, typ, bs string }{
		{"fixed", "fixed", ""}, {"dynamic", "dynamic", ""}, {"dynamic-512k", "dynamic", "512K"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".vhd")
			args := []string{"create", "-t", c.typ, path, fmt.Sprint(size)}
			if c.bs != "" {
				args = append(args, "--block-size", c.bs)
			}
			vhd(t, args...)
			model := make([]byte, size)
			sameBytes(t, "qemu-img (empty)", qemuRead(t, path), model)
			writeModel(t, rng, path, model, 40)
			sameBytes(t, "qemu-img", qemuRead(t, path), model)
			sameBytes(t, "7-Zip", sevenZipRead(t, path), model)
			if out := vhd(t, "check", path); !strings.Contains(out, "no problems") {
				t.Errorf("check: %s", out)
			}
		})
	}
	t.Run("chain", func(t *testing.T) {
		model := make([]byte, size)
		prev := filepath.Join(dir, "base.vhd")
		vhd(t, "create", prev, fmt.Sprint(size))
		writeModel(t, rng, prev, model, 20)
		for i := range 3 {
			child := filepath.Join(dir, fmt.Sprintf("child%d.vhd", i))
			vhd(t, "create", "--parent", prev, child)
			sameBytes(t, fmt.Sprintf("7-Zip, empty child %d", i), sevenZipRead(t, child), model)
			writeModel(t, rng, child, model, 20)
			sameBytes(t, fmt.Sprintf("7-Zip, child %d", i), sevenZipRead(t, child), model)
			prev = child
		}
	})
}

// TestConvertMatchesPeers: vhd convert -O raw of corpus images equals
// qemu-img's and 7-Zip's views, and -O dynamic/fixed of that raw reads back
// the same in qemu-img and stays sparse.
func TestConvertMatchesPeers(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	dir := t.TempDir()
	src := testenv.Unpack(t, corpus, "generated/qemu-img/ext4-10M512.dyn-force.vhd.gz")
	raw := filepath.Join(dir, "out.raw")
	vhd(t, "convert", "-O", "raw", src, raw)
	want, _ := os.ReadFile(raw)
	sameBytes(t, "qemu-img vs vhd convert", qemuRead(t, src), want)
	for _, typ := range []string{"dynamic", "fixed"} {
		out := filepath.Join(dir, "out-"+typ+".vhd")
		vhd(t, "convert", "-O", typ, raw, out)
		sameBytes(t, "qemu-img reading convert -O "+typ, qemuRead(t, out), want)
		sameBytes(t, "7-Zip reading convert -O "+typ, sevenZipRead(t, out), want)
	}
	// An all-zero raw converts to a dynamic disk with no block allocated.
	zero := filepath.Join(dir, "zero.raw")
	os.WriteFile(zero, make([]byte, 8<<20), 0o644)
	vhd(t, "convert", "-O", "dynamic", zero, filepath.Join(dir, "zero.vhd"))
	if out := vhd(t, "info", filepath.Join(dir, "zero.vhd")); !strings.Contains(out, "0 allocated of 4") {
		t.Errorf("zero raw converted with blocks allocated:\n%s", out)
	}
	// DST is never overwritten without --force.
	var errb bytes.Buffer
	if code := run([]string{"convert", "-O", "raw", src, raw}, io.Discard, &errb); code != 1 || !strings.Contains(errb.String(), "--force") {
		t.Errorf("overwrite without --force: exit %d, %q", code, errb.String())
	}
}

// TestWindowsChildWrites writes into the Windows-made differencing disk of
// the corpus: both locators (W2ku at 0x1000, W2ru at 0x3000, around the BAT at
// 0x2000) stay byte for byte, and 7-Zip reads what we wrote.
func TestWindowsChildWrites(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	child := testenv.Unpack(t, corpus, "generated/dfvfs-fat-synthparent/fat-differential.vhd.gz")
	// Work on copies: the unpacked corpus is shared by other tests.
	dir := t.TempDir()
	for _, n := range []string{"fat-differential.vhd", "fat-parent.vhd"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(child), n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, n), b, 0o644)
	}
	child = filepath.Join(dir, "fat-differential.vhd")
	before, _ := os.ReadFile(child)
	model := sevenZipRead(t, child)
	rng := rand.New(rand.NewPCG(52, 52))
	writeModel(t, rng, child, model, 30)
	after, _ := os.ReadFile(child)
	locs := func(b []byte) [][]byte {
		var out [][]byte
		for i := range 8 {
			e := b[512+0x240+24*i:]
			if binary.BigEndian.Uint32(e) == 0 {
				continue
			}
			off, n := binary.BigEndian.Uint64(e[16:]), binary.BigEndian.Uint32(e[8:])
			out = append(out, b[off:off+uint64(n)])
		}
		return out
	}
	lb, la := locs(before), locs(after)
	if len(lb) != 2 || len(la) != 2 {
		t.Fatalf("%d locators before, %d after; want 2", len(lb), len(la))
	}
	for i := range lb {
		if !bytes.Equal(lb[i], la[i]) {
			t.Errorf("locator %d changed", i)
		}
	}
	if !bytes.Equal(before[512:1536], after[512:1536]) {
		t.Error("dynamic header changed")
	}
	sameBytes(t, "7-Zip after our writes", sevenZipRead(t, child), model)
	if out := vhd(t, "check", child); !strings.Contains(out, "no problems") {
		t.Errorf("check: %s", out)
	}
}

// TestXenServerWrites writes into the XenServer (blktap) image of the
// corpus, which has a batmap: the batmap stays as it was (a set bit would
// claim a fully allocated block; none is), and 7-Zip reads what we wrote.
func TestXenServerWrites(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	b, err := os.ReadFile(filepath.Join(corpus, "real/go-vhd/xapi.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "xapi.vhd")
	os.WriteFile(path, b, 0o644)
	// The batmap header follows the BAT; it names the batmap's offset and size.
	batOff := binary.BigEndian.Uint64(b[512+16:])
	entries := binary.BigEndian.Uint32(b[512+28:])
	hdr := batOff + (uint64(entries)*4+511)/512*512
	if string(b[hdr:hdr+8]) != "tdbatmap" {
		t.Fatalf("no batmap header at 0x%x", hdr)
	}
	mapOff := binary.BigEndian.Uint64(b[hdr+8:])
	mapLen := uint64(binary.BigEndian.Uint32(b[hdr+16:])) * 512
	model := make([]byte, 40<<20)
	writeModel(t, rand.New(rand.NewPCG(53, 53)), path, model, 30)
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after[hdr:hdr+512], b[hdr:hdr+512]) || !bytes.Equal(after[mapOff:mapOff+mapLen], b[mapOff:mapOff+mapLen]) {
		t.Error("the batmap or its header changed")
	}
	sameBytes(t, "7-Zip", sevenZipRead(t, path), model)
	if out := vhd(t, "check", path); !strings.Contains(out, "no problems") {
		t.Errorf("check: %s", out)
	}
}
