package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestMain removes the corpus files Unpack copied, pass or fail.
func TestMain(m *testing.M) { testenv.Main(m) }

// The VHDX outputs are read back by qemu-img, 7-Zip and libvhdi and by
// format.Open, and their BAT is read by hand with the spec's constants.

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	testenv.Require(t, err == nil, name+" is not installed (apt-get install qemu-utils 7zip libvhdi-utils)")
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func bytesSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// readBack returns the sha256 of the flat disk of the VHDX file path as
// qemu-img (unless noQemu), 7-Zip, libvhdi and format.Open read it.
func readBack(t *testing.T, path string, depth int, noQemu bool) map[string]string {
	t.Helper()
	got := map[string]string{}
	d, err := format.Open(path, &format.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(d, 0, d.Size())); err != nil {
		t.Fatal(err)
	}
	d.Close()
	got["format.Open"] = hex.EncodeToString(h.Sum(nil))
	tmp := t.TempDir()
	if !noQemu {
		out := filepath.Join(tmp, "q.raw")
		run(t, "qemu-img", "convert", "-f", "vhdx", "-O", "raw", path, out)
		got["qemu-img"] = fileSum(t, out)
		os.Remove(out)
	}
	out := filepath.Join(tmp, "7z.raw")
	f, _ := os.Create(out)
	cmd := exec.Command(tool(t, "7zz"), "e", "-tvhdx", "-so", filepath.Base(path))
	cmd.Dir, cmd.Stdout = filepath.Dir(path), f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	f.Close()
	if err != nil {
		t.Fatalf("7zz: %v: %s", err, stderr.String())
	}
	got["7-Zip"] = fileSum(t, out)
	os.Remove(out)
	fm := tool(t, "fusermount")
	_, err = os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "no /dev/fuse")
	mnt := t.TempDir()
	run(t, "vhdimount", path, mnt)
	got["libvhdi"] = fileSum(t, filepath.Join(mnt, fmt.Sprintf("vhdi%d", depth)))
	for i := 0; ; i++ {
		if exec.Command(fm, "-u", mnt).Run() == nil {
			break
		}
		if i == 50 {
			t.Fatalf("cannot unmount %s", mnt)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return got
}

func sameAll(t *testing.T, got map[string]string, want string) {
	t.Helper()
	for who, s := range got {
		if s != want {
			t.Errorf("%s reads %s, the source is %s", who, s, want)
		}
	}
}

// batByHand reads the BAT of a VHDX file created by this project (region
// table 1 at 192 KiB; the BAT's entry is the first) and returns the payload
// entries of nb blocks with chunk ratio 2^23 × lss / bs.
func batByHand(t *testing.T, path string, nb, bs int64, lss int64) []uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rt := make([]byte, 48)
	f.ReadAt(rt, 192<<10)
	if string(rt[:4]) != "regi" || !bytes.Equal(rt[16:32], []byte{0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08}) {
		t.Fatalf("region table: % x", rt)
	}
	off := int64(binary.LittleEndian.Uint64(rt[32:]))
	ratio := (int64(1) << 23) * lss / bs
	out := make([]uint64, nb)
	for b := range nb {
		var e [8]byte
		f.ReadAt(e[:], off+8*(b+b/ratio))
		out[b] = binary.LittleEndian.Uint64(e[:])
	}
	return out
}

// TestConvertVHDX: the model disk (data, stored zeros, a hole) as dynamic
// and fixed VHDX with several block and sector sizes reads back the same in
// every reader; qemu-img check finds nothing; all-zero blocks are
// NOT_PRESENT and the others FULLY_PRESENT, stored in disk order from the
// end of the BAT region.
func TestConvertVHDX(t *testing.T) {
	src := model()
	want := bytesSum(src.b)
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		o    Options
		bs   int64
		lss  int64
	}{
		{"dyn.vhdx", Options{Output: VHDX}, 32 << 20, 512},
		{"dyn-1M.vhdx", Options{Output: VHDX, BlockSize: 1 << 20}, 1 << 20, 512},
		{"fixed-1M.vhdx", Options{Output: VHDXFixed, BlockSize: 1 << 20}, 1 << 20, 512},
		{"fixed.vhdx", Options{Output: VHDXFixed}, 32 << 20, 512},
		{"dyn-4k.vhdx", Options{Output: VHDX, BlockSize: 2 << 20, SectorSize: 4096}, 2 << 20, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := filepath.Join(dir, c.name)
			var done atomic.Int64
			c.o.Progress = func(n int64) { done.Add(n) }
			if err := Convert(context.Background(), src, dst, c.o); err != nil {
				t.Fatal(err)
			}
			if done.Load() != src.Size() {
				t.Errorf("progress %d, want %d", done.Load(), src.Size())
			}
			qemu := c.lss == 512 // qemu 7.2 refuses 4096-byte sectors
			if qemu {
				run(t, "qemu-img", "check", "-f", "vhdx", dst)
			}
			sameAll(t, readBack(t, dst, 1, !qemu), want)
			nb := (src.Size() + c.bs - 1) / c.bs
			batLen := ((nb+(nb-1)/((1<<23)*c.lss/c.bs))*8 + 1<<20 - 1) >> 20 << 20
			next := uint64(3<<20 + batLen)
			for b, e := range batByHand(t, dst, nb, c.bs, c.lss) {
				blk := src.b[int64(b)*c.bs : min(src.Size(), int64(b+1)*c.bs)]
				w := uint64(0)
				if c.o.Output == VHDXFixed || !bytes.Equal(blk, make([]byte, len(blk))) {
					w = next | 6
					next += uint64(c.bs)
				}
				if e != w {
					t.Errorf("BAT entry of block %d: %#x, want %#x", b, e, w)
				}
			}
		})
	}
	onlyFiles(t, dir, "dyn-1M.vhdx", "dyn-4k.vhdx", "dyn.vhdx", "fixed-1M.vhdx", "fixed.vhdx")
}

// TestConvertToVHDXFromImages: a VHD written by qemu-img, a Hyper-V VHDX
// from the corpus, and a VHDX chain (a qemu-img parent under a child made by
// vhdx.Create) convert to VHDX holding the source's bytes.
func TestConvertToVHDXFromImages(t *testing.T) {
	dir := t.TempDir()
	rawPath := filepath.Join(dir, "disk.raw")
	src := model()
	if err := os.WriteFile(rawPath, src.b, 0o644); err != nil {
		t.Fatal(err)
	}
	want := bytesSum(src.b)
	vhdPath := filepath.Join(dir, "q.vhd")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", rawPath, vhdPath)
	base := filepath.Join(dir, "base.vhdx")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1048576", rawPath, base)
	child := filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	corpus := testenv.CorpusDir(t)
	hv := testenv.Unpack(t, corpus, "real/dissect-hypervisor/fixed.vhdx.gz")
	for _, c := range []struct{ name, path, want string }{
		{"from-raw", rawPath, want},
		{"from-vhd", vhdPath, ""}, // qemu-img rounds a VHD's size up to its geometry
		{"from-chain", child, want},
		{"from-hyperv", hv, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _, closeSrc, err := OpenSource(c.path, InputDetect, "")
			if err != nil {
				t.Fatal(err)
			}
			defer closeSrc()
			want := c.want
			if want == "" {
				h := sha256.New()
				io.Copy(h, io.NewSectionReader(s, 0, s.Size()))
				want = hex.EncodeToString(h.Sum(nil))
				if c.name == "from-vhd" {
					// The first 9 MiB are the model's, the rest zeros.
					b := make([]byte, s.Size())
					s.ReadAt(b, 0)
					if !bytes.Equal(b[:len(src.b)], src.b) || !bytes.Equal(b[len(src.b):], make([]byte, len(b)-len(src.b))) {
						t.Fatal("the VHD source does not read as the model")
					}
				}
			}
			dst := filepath.Join(t.TempDir(), c.name+".vhdx")
			if err := Convert(context.Background(), s, dst, Options{Output: VHDX, BlockSize: 1 << 20}); err != nil {
				t.Fatal(err)
			}
			run(t, "qemu-img", "check", "-f", "vhdx", dst)
			sameAll(t, readBack(t, dst, 1, false), want)
		})
	}
}

// TestConvertVHDXSparse: a 1 GiB source that is mostly holes gives a file
// that allocates little more than its data.
func TestConvertVHDXSparse(t *testing.T) {
	dir := t.TempDir()
	rawPath := filepath.Join(dir, "sparse.raw")
	f, err := os.Create(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("data"), 1<<18) // 1 MiB
	for _, off := range []int64{0, 100 << 20, 700<<20 + 4096} {
		f.WriteAt(data, off)
	}
	f.Truncate(1 << 30)
	f.Close()
	s, _, closeSrc, err := OpenSource(rawPath, InputRaw, "")
	if err != nil {
		t.Fatal(err)
	}
	defer closeSrc()
	for _, out := range []Output{VHDX, VHDXFixed} {
		dst := filepath.Join(dir, fmt.Sprint("out", out, ".vhdx"))
		if err := Convert(context.Background(), s, dst, Options{Output: out}); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dst, &st); err != nil {
			t.Fatal(err)
		}
		// 3 MiB of data (4 MiB: one run straddles a page), the header
		// section, metadata and BAT pages: well under 16 MiB.
		if used := st.Blocks * 512; used > 16<<20 {
			t.Errorf("output %d allocates %d bytes for 3 MiB of data", out, used)
		}
		run(t, "qemu-img", "check", "-f", "vhdx", dst)
		if got := run(t, "qemu-img", "compare", "-f", "raw", "-F", "vhdx", rawPath, dst); !strings.Contains(got, "identical") {
			t.Errorf("qemu-img compare: %s", got)
		}
	}
}

// TestConvertVHDXCancelAndErrors: cancelling or a read error leaves no
// temporary file and the old DST; a 4096-byte sector with a source size that
// is no multiple of it is refused.
func TestConvertVHDXCancelAndErrors(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst.vhdx")
	os.WriteFile(dst, []byte("old"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	src := model()
	src.onRead = func(int64) error { cancel(); return nil }
	if err := Convert(ctx, src, dst, Options{Output: VHDX, Replace: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	boom := errors.New("vhd: /src.vhd: BAT entry 1 at 0x600: corrupt image")
	src.onRead = func(off int64) error {
		if off >= 4<<20 {
			return boom
		}
		return nil
	}
	if err := Convert(context.Background(), src, dst, Options{Output: VHDX, Replace: true, BlockSize: 1 << 20}); !errors.Is(err, boom) {
		t.Errorf("err %v, want %v", err, boom)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old" {
		t.Errorf("DST changed: %q", b)
	}
	onlyFiles(t, dir, "dst.vhdx")
	src.onRead = nil
	odd := &memSource{b: make([]byte, 9<<20+512)}
	if err := Convert(context.Background(), odd, filepath.Join(dir, "x.vhdx"), Options{Output: VHDX, SectorSize: 4096}); err == nil || !strings.Contains(err.Error(), "multiple") {
		t.Errorf("odd size with 4096-byte sectors: %v", err)
	}
	if err := Convert(context.Background(), src, filepath.Join(dir, "x.vhd"), Options{Output: Dynamic, SectorSize: 4096}); err == nil {
		t.Error("a sector size with a VHD output accepted")
	}
	onlyFiles(t, dir, "dst.vhdx")
}
