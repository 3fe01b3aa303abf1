package vhdx_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// The crash tests record every write, truncate and sync a sequence of
// WriteAt calls (and the read-write open before them) makes, then rebuild
// the file as a crash after each of those operations would leave it, and
// check that the prefix opens read-only and read-write, checks clean, and
// reads as the model: every completed WriteAt fully there, the interrupted
// one, sector by sector, either as before or as after it.

type crashWrite struct {
	off int64
	p   []byte
}

// crashRun runs writes on a copy of img (chain: the model, top first) and
// checks every cut. The open's own operations (a log replay) carry tag 0.
func crashRun(t *testing.T, img []byte, chain []*tLayer, writes []crashWrite) {
	t.Helper()
	top := chain[0]
	ss := int64(top.lss)
	below := modelBelow(chain[1:])
	f := newRWFile(img)
	f.record = true
	l, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatalf("read-write open: %v", err)
	}
	models := []*vmodel{newModel(chain)}
	var ranges [][2]int64
	for k, w := range writes {
		f.tag = k + 1
		if n, err := l.WriteAt(w.p, w.off, below); err != nil || n != len(w.p) {
			t.Fatalf("write %d: %d, %v", k+1, n, err)
		}
		m := models[k].clone()
		m.write(w.p, w.off)
		models = append(models, m)
		lo := max(w.off/ss*ss-ss, 0)
		hi := min((w.off+int64(len(w.p))+ss-1)/ss*ss+ss, top.size)
		ranges = append(ranges, [2]int64{lo, hi})
	}
	l.Close()
	ops := f.ops
	if len(ops) == 0 {
		t.Fatal("nothing was written")
	}
	kinds := map[byte]int{}
	for _, o := range ops {
		kinds[o.kind]++
	}
	t.Logf("%d writes made %d operations (%d writes, %d truncates, %d syncs); checking every cut", len(writes), len(ops), kinds['w'], kinds['t'], kinds['s'])
	for i := 0; i <= len(ops); i++ {
		next := len(writes) + 1
		if i < len(ops) {
			next = ops[i].tag
		}
		g := newRWFile(img)
		for _, o := range ops[:i] {
			g.apply(o)
		}
		// Read-only: opens, checks clean (a pending log apart, when the
		// cut is inside the open's replay), reads as the model.
		ro, err := vhdx.Open("/c/top.vhdx", g.clone(), vhdx.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("cut %d/%d (write %d): read-only open: %v", i, len(ops), next, err)
		}
		for _, p := range ro.Check() {
			if next == 0 && strings.Contains(p.Msg, "pending entries") {
				continue
			}
			t.Fatalf("cut %d/%d (write %d): Check: %v", i, len(ops), next, p)
		}
		checkCut(t, ro, below, models, ranges, next, ss, i)
		// Read-write: opens (replaying a log), checks clean, reads the same.
		rw, err := vhdx.Open("/c/top.vhdx", g.clone(), vhdx.Options{})
		if err != nil {
			t.Fatalf("cut %d/%d (write %d): read-write open: %v", i, len(ops), next, err)
		}
		if ps := rw.Check(); len(ps) > 0 {
			t.Fatalf("cut %d/%d (write %d): Check after a read-write open: %v", i, len(ops), next, ps)
		}
		checkCut(t, rw, below, models, ranges, next, ss, i)
	}
}

// checkCut compares the ranges the writes touched: writes before next are
// complete; write next (if any) is there or not, per sector.
func checkCut(t *testing.T, l *vhdx.Layer, below interface {
	ReadAt([]byte, int64) (int, error)
}, models []*vmodel, ranges [][2]int64, next int, ss int64, cut int) {
	t.Helper()
	done := models[max(next-1, 0)]
	var after *vmodel
	if next >= 1 && next < len(models) {
		after = models[next]
	}
	for _, r := range ranges {
		got := readLayer(t, l, below, r[0], r[1]-r[0])
		want := done.read(r[0], r[1]-r[0])
		if bytes.Equal(got, want) {
			continue
		}
		if after == nil {
			t.Fatalf("cut %d: range %d-%d differs from the completed writes at %d", cut, r[0], r[1], firstDiff(got, want)+r[0])
		}
		alt := after.read(r[0], r[1]-r[0])
		for s := int64(0); s < int64(len(got)); s += ss {
			g := got[s : s+ss]
			if !bytes.Equal(g, want[s:s+ss]) && !bytes.Equal(g, alt[s:s+ss]) {
				t.Fatalf("cut %d (inside write %d): sector at %d is neither as before nor as after the write", cut, next, r[0]+s)
			}
		}
	}
}

func rnd(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32() | 1)
	}
	return p
}

// TestCrashDynamic: the first write's header update, new blocks in
// NOT_PRESENT and ZERO blocks, a write across two new blocks, partial
// sectors, in-place writes, an all-zero write.
func TestCrashDynamic(t *testing.T) {
	for _, lss := range []int{512, 4096} {
		t.Run(map[int]string{512: "512", 4096: "4096"}[lss], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, uint64(lss)))
			l := smallLayer(rng, false)
			l.lss = lss
			img := buildBytes(t, rng, l)
			crashRun(t, img, []*tLayer{l}, []crashWrite{
				{3<<20 + 100, rnd(rng, 700)},         // NOT_PRESENT block, partial sectors
				{1<<20 - 300, rnd(rng, 5000)},        // FULLY_PRESENT block 0 into ZERO block 1
				{5<<20 + 4096, rnd(rng, 4096)},       // in place
				{9<<20 - 1, rnd(rng, 2<<20)},         // across two new blocks
				{20 << 20, make([]byte, 8192)},       // zeros into NOT_PRESENT: nothing
				{3<<20 + 50, rnd(rng, 100)},          // the block allocated above
				{64<<20 - int64(lss), rnd(rng, lss)}, // last sector of the disk
			})
		})
	}
}

// TestCrashDifferencing: a child with no sector bitmap block yet: the
// bitmap block's allocation, new PARTIALLY_PRESENT blocks with partial
// sectors filled from below, more writes into them (edge sectors held and
// not held), a ZERO block of the child becoming FULLY_PRESENT.
func TestCrashDifferencing(t *testing.T) {
	for _, lss := range []int{512, 4096} {
		t.Run(map[int]string{512: "512", 4096: "4096"}[lss], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(22, uint64(lss)))
			par := smallLayer(rng, false)
			par.lss, par.id, par.name = lss, 9, "p.vhdx"
			child := &tLayer{name: "top.vhdx", id: 3, size: 64 << 20, bs: 2 << 20, lss: lss, pss: 4096, diff: true,
				states: map[int64]int{4: tZero, 6: tFully}, bits: map[int64][]bool{}}
			link(rng, child, par)
			img := buildBytes(t, rng, child)
			ss := int64(lss)
			crashRun(t, img, []*tLayer{child, par}, []crashWrite{
				{100, rnd(rng, 300)},            // block 0: bitmap block, partial sector from below
				{2*ss + 7, rnd(rng, int(3*ss))}, // block 0 again: one edge held, one not
				{5 * ss, rnd(rng, int(ss))},     // block 0, aligned
				{5<<20 + 3, rnd(rng, 20000)},    // block 2 new
				{8<<20 + 11, rnd(rng, 10)},      // ZERO block 4 -> FULLY_PRESENT
				{12<<20 + 1000, rnd(rng, 3000)}, // FULLY_PRESENT block 6, in place
				{4<<20 - 10, rnd(rng, 20)},      // across blocks 1 and 2
				{0, make([]byte, int(ss))},      // zeros into a held sector
			})
		})
	}
}

// TestCrashLogReplay: a file with a pending log: the read-write open
// replays it into the file and clears it; a crash at any point of that
// leaves a file that still reads as the replayed one (the log stays until
// the header says otherwise). Then a write.
func TestCrashLogReplay(t *testing.T) {
	for _, diff := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(23, 1))
		l := smallLayer(rng, diff)
		l.pendingLog = true
		chain := []*tLayer{l}
		if diff {
			par := smallLayer(rng, false)
			par.id, par.name = 11, "p.vhdx"
			link(rng, l, par)
			chain = append(chain, par)
		}
		img := buildBytes(t, rng, l)
		crashRun(t, img, chain, []crashWrite{{1<<20 + 5, rnd(rng, 3000)}})
		// The replay keeps DataWriteGuid (children keep matching).
		f := newRWFile(img)
		ro, err := vhdx.Open("/c/top.vhdx", f.clone(), vhdx.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		rw, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		a, _ := ro.Info()
		b, _ := rw.Info()
		if b.Log.State != "empty" || rw.LogReplayed() {
			t.Fatalf("after a read-write open the log is %q", b.Log.State)
		}
		cur := func(in *vhdx.Info) *vhdx.Header {
			for _, h := range in.Headers {
				if h.Current {
					return h.Header
				}
			}
			return nil
		}
		if cur(a).DataWriteGUID != cur(b).DataWriteGUID || !cur(b).LogGUID.IsZero() {
			t.Fatalf("log replay: header %+v -> %+v", cur(a), cur(b))
		}
	}
}
