package vhdx_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// testConfigs are the geometries the randomized tests cover: every block
// size the brief names, both logical sector sizes, disks of two or more
// chunks (a chunk is 4 GiB with 512-byte sectors, 32 GiB with 4096).
var testConfigs = []struct {
	bs   int64
	lss  int
	size int64
}{
	{1 << 20, 512, 9<<30 + 3<<20 + 512},
	{2 << 20, 512, 8<<30 + 2<<20},
	{32 << 20, 512, 9<<30 + 5<<20 + 1024},
	{1 << 20, 4096, 33<<30 + 4096},
	{2 << 20, 4096, 40 << 30},
	{32 << 20, 4096, 65<<30 + 32<<20 + 8192},
}

// makeChain builds a random chain of depth+1 layers (top first) in dir.
func makeChain(t *testing.T, rng *rand.Rand, dir string, cfgIdx, depth int, pending bool) []*tLayer {
	t.Helper()
	c := testConfigs[cfgIdx]
	var layers []*tLayer
	for d := depth; d >= 0; d-- {
		// Each layer may have its own block size; sizes may grow upward.
		bc := testConfigs[rng.IntN(len(testConfigs))]
		bs := bc.bs
		size := c.size - int64(d)*int64(rng.IntN(3))*int64(c.lss)*1000
		l := randomLayer(rng, fmt.Sprintf("l%d.vhdx", d), byte(0x10+d), size, bs, c.lss, d < depth)
		l.fixed = d == depth && rng.IntN(3) == 0
		if pending && rng.IntN(2) == 0 || pending && d == 0 {
			l.pendingLog = true
			l.states[0] = tFully
		}
		l.tornOld = rng.IntN(4) == 0
		l.tornRT1 = rng.IntN(4) == 0
		layers = append([]*tLayer{l}, layers...)
	}
	for i := 0; i+1 < len(layers); i++ {
		link(rng, layers[i], layers[i+1])
	}
	if err := writeChain(rng, dir, layers); err != nil {
		t.Fatal(err)
	}
	return layers
}

// interesting returns offsets of the top layer worth reading around.
func interesting(layers []*tLayer) []int64 {
	var offs []int64
	for _, l := range layers {
		for b := range l.states {
			offs = append(offs, b*l.bs, b*l.bs+l.bs-1)
		}
		offs = append(offs, l.size-1)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	return offs
}

// TestBuilderChains builds random chains (dynamic, fixed and differencing
// layers, every block state, partial bitmaps, pending wrapped logs, torn
// headers and region tables) and compares random reads of the flat disk
// with the model.
func TestBuilderChains(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 77))
			dir := t.TempDir()
			cfg := int(seed) % len(testConfigs)
			layers := makeChain(t, rng, dir, cfg, int(seed%3), seed%2 == 0)
			ch, err := openChain(dir+"/"+layers[0].name, openFile)
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if len(ch) != len(layers) {
				t.Fatalf("chain of %d layers; want %d", len(ch), len(layers))
			}
			for i, l := range layers {
				vl := ch[i].(*vhdx.Layer)
				if vl.LogReplayed() != l.pendingLog {
					t.Errorf("%s: LogReplayed %v; want %v", l.name, vl.LogReplayed(), l.pendingLog)
				}
				if ch[i].Size() != l.size || ch[i].SectorSize() != l.lss {
					t.Errorf("%s: size %d sector %d; want %d %d", l.name, ch[i].Size(), ch[i].SectorSize(), l.size, l.lss)
				}
				if probs := vl.Check(); len(probs) != 0 && !l.pendingLog && !l.tornOld && !l.tornRT1 {
					t.Errorf("%s: Check: %v", l.name, probs)
				}
			}
			size := layers[0].size
			offs := interesting(layers)
			for i := 0; i < 300; i++ {
				var off int64
				if i%2 == 0 {
					off = offs[rng.IntN(len(offs))] - rng.Int64N(8192)
				} else {
					off = rng.Int64N(size)
				}
				off = max(0, min(off, size-1))
				n := min(1+rng.Int64N(3<<20), size-off)
				if i%3 == 0 {
					n = min(1+rng.Int64N(5000), size-off)
				}
				got := make([]byte, n)
				if _, err := ch.ReadAt(got, off); err != nil {
					t.Fatalf("read %d+%d: %v", off, n, err)
				}
				if want := expect(layers, off, n); !bytes.Equal(got, want) {
					k := 0
					for k < len(got) && got[k] == want[k] {
						k++
					}
					t.Fatalf("read %d+%d differs from the model at disk offset %d: %s; got % x want % x", off, n, off+int64(k),
						describe(layers, off+int64(k)), got[k:min(k+16, len(got))], want[k:min(k+16, len(got))])
				}
			}
			// Whole blocks of the top layer that the tests care about.
			top := layers[0]
			for _, b := range sortedKeys(top.states) {
				off := b * top.bs
				n := min(top.bs, size-off)
				got := make([]byte, n)
				if _, err := ch.ReadAt(got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, expect(layers, off, n)) {
					t.Fatalf("block %d differs from the model", b)
				}
			}
		})
	}
}

func describe(layers []*tLayer, off int64) string {
	s := ""
	for _, l := range layers {
		b := off / l.bs
		s += fmt.Sprintf("[%s bs %d size %d block %d state %d", l.name, l.bs, l.size, b, l.state(b))
		if bits, ok := l.bits[b]; ok {
			s += fmt.Sprintf(" bit %v", bits[(off%l.bs)/int64(l.lss)])
		}
		s += fmt.Sprintf(" pending %v] ", l.pendingLog)
	}
	return s
}

func sortedKeys(m map[int64]int) []int64 {
	var k []int64
	for b := range m {
		k = append(k, b)
	}
	sort.Slice(k, func(i, j int) bool { return k[i] < k[j] })
	return k
}
