package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// damagedImage is a 4 MiB dynamic image with 2 MiB blocks, block 0
// allocated and holding 0xAA in its first sector, after mess changed it.
func damagedImage(t *testing.T, mess func(img []byte)) (memFS, *memFile) {
	t.Helper()
	l := &tLayer{typ: 3, size: 4 << 20, blockSize: 2 << 20, blocks: map[int64]*tBlock{}, batPad: 0xFF}
	l.uuid[0] = 9
	blk := &tBlock{bits: make([]bool, 4096), data: make([]byte, 2<<20)}
	blk.bits[0] = true
	for i := range 512 {
		blk.data[i] = 0xAA
	}
	l.blocks[0] = blk
	img := l.image()
	mess(img)
	f := newMemFile("/img/x.vhd", img)
	return memFS{"/img/x.vhd": f}, f
}

func hdrResum(img []byte) {
	h := img[512:1536]
	binary.BigEndian.PutUint32(h[36:], 0)
	binary.BigEndian.PutUint32(h[36:], tChecksum(h))
}

// TestDamagedRefusedForWrite: an image that Check finds damaged is never
// opened read-write (a write would corrupt it further); the error wraps
// ErrCorrupt, names the file, the field and its offset, and suggests --ro.
// Read-only opens still work and Check names the problem.
func TestDamagedRefusedForWrite(t *testing.T) {
	const bat = 1536
	for _, c := range []struct {
		name  string
		mess  func(img []byte)
		field string
		off   int64
		want  string
	}{
		{"entry past EOF", func(img []byte) {
			binary.BigEndian.PutUint32(img[bat+4:], uint32(len(img)/512+16))
		}, "BAT entry 1", bat + 4, "past the end"},
		{"two entries name one block", func(img []byte) {
			copy(img[bat+4:bat+8], img[bat:bat+4])
		}, "BAT entry 1", bat + 4, "same block"},
		{"BAT inside the dynamic header", func(img []byte) {
			// The header's reserved tail (0x300-0x3FF) read as 64 entries
			// of 0xFFFFFFFF: the image reads fine, and the first write
			// would overwrite the header with a BAT entry.
			for i := 512 + 0x300; i < 1536; i++ {
				img[i] = 0xFF
			}
			binary.BigEndian.PutUint64(img[512+16:], 512+0x300)
			hdrResum(img)
		}, "dynamic header TableOffset", 512 + 0x10, "overlaps the dynamic header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fsys, f := damagedImage(t, c.mess)
			before := f.bytes()
			d, err := Open("/img/x.vhd", fsys.opts())
			if err == nil {
				d.WriteAt(make([]byte, 512), 2<<20)
				d.Close()
				t.Fatal("a damaged image was opened read-write")
			}
			var fe *FormatError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &fe) || fe.Field != c.field || fe.Off != c.off ||
				!strings.Contains(err.Error(), "/img/x.vhd") || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "--ro") {
				t.Fatalf("error %q; want ErrCorrupt naming the file, %s at 0x%x, %q and --ro", err, c.field, c.off, c.want)
			}
			if string(f.bytes()) != string(before) {
				t.Fatal("the refused open changed the file")
			}
			o := fsys.opts()
			o.ReadOnly = true
			d, err = Open("/img/x.vhd", o)
			if err != nil {
				t.Fatalf("read-only open: %v", err)
			}
			defer d.Close()
			if probs := d.Check(); !strings.Contains(fmt.Sprint(probs), c.want) {
				t.Fatalf("Check: %v; want a problem about %q", probs, c.want)
			}
		})
	}
}

// TestWholeBATInFile: a BAT whose table (MaxTableEntries x 4 bytes) runs
// past the end of the file is refused, read-only too, even when the entries
// covering the virtual size are inside it.
func TestWholeBATInFile(t *testing.T) {
	fsys, f := damagedImage(t, func(img []byte) {
		binary.BigEndian.PutUint32(img[512+28:], uint32(len(img)/4)) // 4 bytes each: past the end
		hdrResum(img)
	})
	for _, ro := range []bool{true, false} {
		o := fsys.opts()
		o.ReadOnly = ro
		d, err := Open("/img/x.vhd", o)
		if err == nil {
			d.Close()
			t.Fatalf("opened (read-only %v) with a BAT of %d bytes in a file of %d", ro, len(f.b), len(f.b))
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "MaxTableEntries") || !strings.Contains(err.Error(), "/img/x.vhd") {
			t.Fatalf("error %q; want ErrCorrupt about MaxTableEntries naming the file", err)
		}
	}
}

// TestCheckBounded: a garbage BAT of half a million entries yields a
// bounded list of problems: the first examples of each kind and a count of
// the rest.
func TestCheckBounded(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	const n = 1 << 19
	l := &tLayer{typ: 3, size: n * 512, blockSize: 512, blocks: map[int64]*tBlock{}, batPad: 0xFF}
	img := l.image()
	foot := append([]byte(nil), img[len(img)-512:]...)
	dataStart := uint32(len(img)-512) / 512
	img = append(append(img[:len(img)-512], make([]byte, 1<<20)...), foot...)
	for i := range n {
		e := rng.Uint32()
		if i%2 == 0 {
			e = dataStart + rng.Uint32N(2000) // inside the data area: overlapping blocks
		}
		binary.BigEndian.PutUint32(img[1536+4*i:], e)
	}
	fsys := memFS{"/x.vhd": newMemFile("/x.vhd", img)}
	o := fsys.opts()
	o.ReadOnly = true
	d, err := Open("/x.vhd", o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	probs := d.Check()
	if len(probs) > 6*(MaxProblemExamples+1) {
		t.Fatalf("%d problems kept for a garbage BAT; want at most %d", len(probs), 6*(MaxProblemExamples+1))
	}
	s := fmt.Sprint(probs)
	for _, want := range []string{"past the end", "same block", "... and "} {
		if !strings.Contains(s, want) {
			t.Errorf("no problem mentions %q", want)
		}
	}
	var more int
	for _, p := range probs {
		var k int
		if _, err := fmt.Sscanf(p.Msg, "... and %d more", &k); err == nil {
			more += k
		}
	}
	if got := len(probs) - 2 + more; got < n*9/10 {
		t.Errorf("problems counted: %d; want about one per entry (%d)", got, n)
	}
}

// TestNotVHDNoBytes: the error for a file that is not a VHD does not print
// its bytes: a parent locator may name any file on the machine.
func TestNotVHDNoBytes(t *testing.T) {
	secret := strings.Repeat("TOPSECRET-", 100)
	rng := rand.New(rand.NewPCG(3, 3))
	child := randomLayer(rng, 4, 4<<20, 2<<20, 2)
	child.parentUUID[0] = 7
	child.w2ru = `..\etc\shadow`
	fsys := memFS{
		"/img/x.vhd":  newMemFile("/img/x.vhd", child.image()),
		"/etc/shadow": newMemFile("/etc/shadow", []byte(secret)),
		"/plain.txt":  newMemFile("/plain.txt", []byte(secret)),
	}
	for _, p := range []string{"/img/x.vhd", "/plain.txt"} {
		o := fsys.opts()
		o.ReadOnly = true
		_, err := Open(p, o)
		if err == nil {
			t.Fatalf("%s opened", p)
		}
		if strings.Contains(err.Error(), "TOPSECR") || strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("error prints the file's bytes: %v", err)
		}
		if p == "/plain.txt" && !errors.Is(err, ErrNotVHD) {
			t.Fatalf("error %v; want ErrNotVHD", err)
		}
		if p == "/img/x.vhd" && !strings.Contains(err.Error(), "/etc/shadow") {
			t.Fatalf("error %v does not list the candidate tried", err)
		}
	}
}

// TestNewBlockPastLocatorClaim: a locator whose reserved space runs past the
// end of the file still keeps new blocks out of that space.
func TestNewBlockPastLocatorClaim(t *testing.T) {
	const space = 4 << 20
	fsys, f := damagedImage(t, func(img []byte) {
		e := img[512+0x240:]
		copy(e, "W2ku")
		binary.BigEndian.PutUint32(e[4:], space)
		binary.BigEndian.PutUint64(e[16:], 2048)
		hdrResum(img)
	})
	if int64(len(f.b)) >= space {
		t.Fatalf("the image (%d bytes) must be smaller than the locator space", len(f.b))
	}
	d, err := Open("/img/x.vhd", fsys.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt([]byte{1}, 2<<20); err != nil {
		t.Fatal(err)
	}
	runs, err := d.layers[0].Map(nil, 2<<20, 1)
	if err != nil || len(runs) != 1 || runs[0].State != lay.Data {
		t.Fatalf("block 1 maps to %v, %v; want data", runs, err)
	}
	if start := runs[0].FileOff - 512; start < 2048+space { // the block's bitmap is 512 bytes
		t.Fatalf("new block 1 at 0x%x, inside the locator space 0x800-0x%x", start, 2048+space)
	}
}
