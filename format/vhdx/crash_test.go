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
	off     int64
	p       []byte
	discard int64 // > 0: a Discard of this many bytes at off (p unused)
}

// modelHasData is belowHasData for a chain below a writable layer (top
// first), from the builder's model: whether any of it reads non-zero bytes
// in the range (a layer holding only zeros there may say no: what falls
// through then reads zeros all the same).
func modelHasData(chain []*tLayer) func(off, n int64) bool {
	return func(off, n int64) bool {
		return len(chain) > 0 && !bytes.Equal(expect(chain, off, n), make([]byte, n))
	}
}

// crashRun runs writes on a copy of img (chain: the model, top first) and
// checks every cut. The open's own operations (a log replay) carry tag 0.
func crashRun(t *testing.T, img []byte, chain []*tLayer, writes []crashWrite) {
	t.Helper()
	top := chain[0]
	ss := int64(top.lss)
	below := modelBelow(chain[1:])
	hasData := modelHasData(chain[1:])
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
		m := models[k].clone()
		n := int64(len(w.p))
		if w.discard > 0 {
			n = w.discard
			if err := l.Discard(w.off, n, below, hasData); err != nil {
				t.Fatalf("discard %d: %v", k+1, err)
			}
			m.write(make([]byte, n), w.off)
		} else {
			if n, err := l.WriteAt(w.p, w.off, below); err != nil || n != len(w.p) {
				t.Fatalf("write %d: %d, %v", k+1, n, err)
			}
			m.write(w.p, w.off)
		}
		models = append(models, m)
		lo := max(w.off/ss*ss-ss, 0)
		hi := min((w.off+n+ss-1)/ss*ss+ss, top.size)
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
	t.Logf("%d writes made %d operations (%d writes, %d truncates, %d syncs, %d punches); checking every cut", len(writes), len(ops), kinds['w'], kinds['t'], kinds['s'], kinds['p'])
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
				{off: 3<<20 + 100, p: rnd(rng, 700)},         // NOT_PRESENT block, partial sectors
				{off: 1<<20 - 300, p: rnd(rng, 5000)},        // FULLY_PRESENT block 0 into ZERO block 1
				{off: 5<<20 + 4096, p: rnd(rng, 4096)},       // in place
				{off: 9<<20 - 1, p: rnd(rng, 2<<20)},         // across two new blocks
				{off: 20 << 20, p: make([]byte, 8192)},       // zeros into NOT_PRESENT: nothing
				{off: 3<<20 + 50, p: rnd(rng, 100)},          // the block allocated above
				{off: 64<<20 - int64(lss), p: rnd(rng, lss)}, // last sector of the disk
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
				{off: 100, p: rnd(rng, 300)},            // block 0: bitmap block, partial sector from below
				{off: 2*ss + 7, p: rnd(rng, int(3*ss))}, // block 0 again: one edge held, one not
				{off: 5 * ss, p: rnd(rng, int(ss))},     // block 0, aligned
				{off: 5<<20 + 3, p: rnd(rng, 20000)},    // block 2 new
				{off: 8<<20 + 11, p: rnd(rng, 10)},      // ZERO block 4 -> FULLY_PRESENT
				{off: 12<<20 + 1000, p: rnd(rng, 3000)}, // FULLY_PRESENT block 6, in place
				{off: 4<<20 - 10, p: rnd(rng, 20)},      // across blocks 1 and 2
				{off: 0, p: make([]byte, int(ss))},      // zeros into a held sector
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
		crashRun(t, img, chain, []crashWrite{{off: 1<<20 + 5, p: rnd(rng, 3000)}})
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

// TestCrashDiscard: discard sequences, cut after every operation: whole
// blocks of a dynamic file (FULLY_PRESENT to NOT_PRESENT, punched), parts
// of blocks (pages punched, zeros at the edges, partial sectors), a range
// across blocks; in a child, whole PARTIALLY_PRESENT and FULLY_PRESENT
// blocks over a parent holding data (to ZERO) and over one holding nothing
// (to NOT_PRESENT), parts of PARTIALLY_PRESENT blocks (zeros written, bits
// set), a NOT_PRESENT block over parent data (zeros in a new block), and
// writes after the discards.
func TestCrashDiscard(t *testing.T) {
	for _, lss := range []int{512, 4096} {
		ss := int64(lss)
		t.Run("dynamic-"+map[int]string{512: "512", 4096: "4096"}[lss], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(24, uint64(lss)))
			l := smallLayer(rng, false)
			l.lss = lss
			img := buildBytes(t, rng, l)
			crashRun(t, img, []*tLayer{l}, []crashWrite{
				{off: 5 << 20, discard: 1 << 20},                 // whole FULLY_PRESENT block
				{off: 100, discard: 3*4096 + 1000},               // part of block 0: pages and edges
				{off: 3<<20 + 100, p: rnd(rng, 700)},             // a new block
				{off: 3<<20 + 7, discard: 300},                   // inside a sector
				{off: 1<<20 - 4096 - 10, discard: 2<<20 + 20000}, // across blocks 0 (tail), 1 (ZERO), 2, 3
				{off: 5<<20 + 3, p: rnd(rng, 5000)},              // a new block where one was discarded
				{off: 63 << 20, discard: 1 << 20},                // the last block
				{off: 40 << 20, discard: 2 << 20},                // NOT_PRESENT: nothing
			})
		})
		t.Run("child-"+map[int]string{512: "512", 4096: "4096"}[lss], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(25, uint64(lss)))
			par := smallLayer(rng, false)
			par.lss, par.id, par.name = lss, 9, "p.vhdx"
			par.states[2], par.states[3] = tFully, tFully
			child := &tLayer{name: "top.vhdx", id: 3, size: 64 << 20, bs: 1 << 20, lss: lss, pss: 4096, diff: true,
				states: map[int64]int{4: tZero, 6: tFully, 8: tFully}, bits: map[int64][]bool{}}
			for _, b := range []int64{0, 2, 10} {
				child.states[b] = tPartial
				bits := make([]bool, (1<<20)/lss)
				for i := range bits {
					bits[i] = i%3 != 1
				}
				child.bits[b] = bits
			}
			link(rng, child, par)
			img := buildBytes(t, rng, child)
			crashRun(t, img, []*tLayer{child, par}, []crashWrite{
				{off: 0, discard: 1 << 20},                 // whole PARTIALLY_PRESENT over parent data: ZERO
				{off: 10 << 20, discard: 1 << 20},          // whole PARTIALLY_PRESENT, nothing below: NOT_PRESENT
				{off: 6 << 20, discard: 1 << 20},           // whole FULLY_PRESENT, nothing below: NOT_PRESENT
				{off: 2<<20 + 3*ss + 5, discard: 5 * 4096}, // part of PARTIALLY_PRESENT block 2 over parent data
				{off: 8<<20 + 100, discard: 9000},          // part of FULLY_PRESENT block 8
				{off: 3<<20 + 700, discard: 3*4096 + 11},   // NOT_PRESENT block 3 over parent data: a new block
				{off: 5 << 20, discard: 1 << 20},           // NOT_PRESENT over parent data, whole: ZERO
				{off: 1<<20 + 5, p: rnd(rng, int(2*ss))},   // a write after the discards
				{off: 0, p: rnd(rng, 100)},                 // into the ZERO block 0
			})
		})
	}
}
