package format

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestCheckFindsProblems corrupts a valid image one way at a time; Check must
// name each problem (the disk is opened with IgnoreChecksums so checksum
// problems reach Check).
func TestCheckFindsProblems(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 41))
	l := randomLayer(rng, 3, 6<<20, 2<<20, 1)
	for b := range int64(3) {
		l.blocks[b] = &tBlock{bits: make([]bool, 4096), data: make([]byte, 2<<20)}
	}
	base := l.image()
	batEntry := func(b []byte, i int) uint32 { return binary.BigEndian.Uint32(b[1536+4*i:]) }
	for _, c := range []struct {
		name string
		mess func(b []byte) []byte
		want string
	}{
		{"clean", func(b []byte) []byte { return b }, ""},
		{"footer copy differs", func(b []byte) []byte { b[100] ^= 1; return b }, "footer copy at offset 0 differs"},
		{"footer checksum", func(b []byte) []byte { b[len(b)-512+100] ^= 1; return b }, "footer checksum"},
		{"header checksum", func(b []byte) []byte { b[512+800] ^= 1; return b }, "dynamic header checksum"},
		{"overlapping blocks", func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[1536+4:], batEntry(b, 0)+8)
			return b
		}, "overlaps block"},
		{"block past EOF", func(b []byte) []byte { binary.BigEndian.PutUint32(b[1536+8:], 1<<24); return b }, "past the end"},
		{"no footer at end", func(b []byte) []byte { return b[:len(b)-512] }, "no valid footer at the end"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := c.mess(append([]byte(nil), base...))
			fsys := memFS{"/x.vhd": newMemFile("/x.vhd", img)}
			o := fsys.opts()
			o.IgnoreChecksums = true
			d, err := Open("/x.vhd", o)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			probs := d.Check()
			if c.want == "" {
				if len(probs) != 0 {
					t.Fatalf("problems in a clean image: %v", probs)
				}
				return
			}
			if len(probs) == 0 || !strings.Contains(fmt.Sprint(probs), c.want) {
				t.Fatalf("problems %v; want one about %q", probs, c.want)
			}
		})
	}
}

// TestConcurrentWrites runs writers on disjoint ranges (several per block,
// and across blocks) while readers read; run with -race. The result must
// equal the model.
func TestConcurrentWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	parent := randomLayer(rng, 3, 8<<20, 1<<20, 1)
	child := randomLayer(rng, 4, 8<<20, 1<<20, 2)
	chain := []*tLayer{child, parent}
	fsys := chainFS(chain)
	model := flat(chain)
	d, err := Open("/img/layer0.vhd", fsys.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// 64 KiB slots, interleaved among 8 writers, so writers share blocks.
	const slot = 64 << 10
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for s := int64(w); s*slot < d.Size(); s += 8 {
				for range 3 {
					off := s*slot + r.Int64N(slot-3000)
					p := make([]byte, 1+r.IntN(2999))
					fillRandom(r, p)
					if _, err := d.WriteAt(p, off); err != nil {
						t.Error(err)
						return
					}
					copy(model[off:], p) // disjoint slots: no two goroutines touch the same bytes
				}
			}
		}()
	}
	stop := make(chan struct{})
	var rg sync.WaitGroup
	for g := range 2 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 2))
			buf := make([]byte, 1<<20)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := d.ReadAt(buf, r.Int64N(7)<<20); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	checkAll(t, d, model, "after concurrent writes")
	if probs := d.Check(); len(probs) > 0 {
		t.Fatal(probs)
	}
}
