package vhdx_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// FuzzWriteVHDX drives the write path with arbitrary write sequences on
// small dynamic and differencing images (512 and 4096-byte sectors): no
// panic, every write's range reads as the model, and the file reopens
// read-write and checks clean.
//
// Input: a byte choosing the image, then records of offset (u32, scaled
// into the disk), length (u16) and fill byte.
func FuzzWriteVHDX(f *testing.F) {
	type img struct {
		b     []byte
		chain []*tLayer
	}
	var imgs []img
	rng := rand.New(rand.NewPCG(99, 1))
	for _, diff := range []bool{false, true} {
		for _, lss := range []int{512, 4096} {
			l := smallLayer(rng, diff)
			l.lss = lss
			chain := []*tLayer{l}
			if diff {
				delete(l.states, 7) // its bits are sized for 512-byte sectors
				l.states[9] = tZero
				par := smallLayer(rng, false)
				par.lss, par.id, par.name = lss, 12, "p.vhdx"
				link(rng, l, par)
				chain = append(chain, par)
			}
			imgs = append(imgs, img{buildBytes(f, rng, l), chain})
		}
	}
	f.Add([]byte{0, 0, 0, 0, 0, 0x10, 0, 0xAB})
	f.Add([]byte{3, 0x00, 0x10, 0, 0x7F, 0xFF, 0x01, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x10, 0})
	f.Add([]byte{1, 0x33, 0x22, 0x11, 0x00, 0x00, 0x20, 0x00, 0x80, 0x00, 0x00, 0x00, 0x01, 0xC8, 0x05})
	f.Add([]byte{2, 0x01, 0x02, 0x70, 0x00, 0x10, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		im := imgs[int(data[0])%len(imgs)]
		data = data[1:]
		top := im.chain[0]
		below := modelBelow(im.chain[1:])
		file := newRWFile(im.b)
		l, err := vhdx.Open("/f/top.vhdx", file, vhdx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m := newModel(im.chain)
		for k := 0; len(data) >= 7 && k < 16; k++ {
			off := int64(binary.LittleEndian.Uint32(data)) * 17 % top.size
			n := min(int64(binary.LittleEndian.Uint16(data[4:]))*7+1, top.size-off)
			p := bytes.Repeat([]byte{data[6]}, int(n))
			data = data[7:]
			if _, err := l.WriteAt(p, off, below); err != nil {
				t.Fatalf("write %d bytes at %d: %v", n, off, err)
			}
			m.write(p, off)
			ss := int64(top.lss)
			lo, hi := max(off-ss, 0), min(off+n+ss, top.size)
			if got, want := readLayer(t, l, below, lo, hi-lo), m.read(lo, hi-lo); !bytes.Equal(got, want) {
				t.Fatalf("write %d bytes at %d: reads differ from the model at %d", n, off, firstDiff(got, want)+lo)
			}
		}
		l.Close()
		l2, err := vhdx.Open("/f/top.vhdx", file, vhdx.Options{})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		mustClean(t, l2, "reopen")
	})
}
