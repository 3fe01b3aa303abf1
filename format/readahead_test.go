package format

import (
	"math/rand/v2"
	"sync"
	"testing"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// advice records the ranges adviseFile was given, per file.
type advice struct {
	mu     sync.Mutex
	ranges map[File][][2]int64
}

func (a *advice) record(f File, off, n int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ranges[f] = append(a.ranges[f], [2]int64{off, off + n})
	return nil
}

// covers reports whether [off, off+n) of f lies within the advised ranges.
func (a *advice) covers(f File, off, n int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for end := off + n; off < end; {
		next := off
		for _, r := range a.ranges[f] {
			if r[0] <= off && off < r[1] {
				next = max(next, r[1])
			}
		}
		if next == off {
			return false
		}
		off = next
	}
	return true
}

func (a *advice) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, rs := range a.ranges {
		n += len(rs)
	}
	return n
}

// TestReadAhead: a sequential stream of large reads has the files read
// ahead of it, over exactly the file ranges its next reads will read, and
// never past the disk's end; random reads, small or large, advise nothing.
func TestReadAhead(t *testing.T) {
	if !canAdvise {
		t.Skip("no readahead advice on this OS")
	}
	rng := rand.New(rand.NewPCG(7, 7))
	const size = 96 << 20
	chain := []*tLayer{randomLayer(rng, 4, size, 256<<10, 3), randomLayer(rng, 4, size, 512<<10, 2), randomLayer(rng, 3, size, 2<<20, 1)}
	fsys := chainFS(chain)
	o := fsys.opts()
	o.ReadOnly = true
	a := &advice{ranges: map[File][][2]int64{}}
	old := adviseFile
	adviseFile = a.record
	defer func() { adviseFile = old }()
	d, err := Open("/img/layer0.vhd", o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := flat(chain)

	read := func(off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		if _, err := d.ReadAt(p, off); err != nil {
			t.Fatalf("read %d at %d: %v", n, off, err)
		}
		if string(p) != string(want[off:off+int64(n)]) {
			t.Fatalf("read %d at %d differs from the model", n, off)
		}
	}
	// Random reads: 4 KiB ones anywhere, 1 MiB ones far apart.
	for range 200 {
		read(rng.Int64N(size-4096), 4096)
	}
	for k := range 20 {
		read(int64(k%4)*24<<20+rng.Int64N(4<<20), 1<<20)
	}
	d.ra.wg.Wait()
	if n := a.count(); n != 0 {
		t.Fatalf("random reads gave %d pieces of advice", n)
	}

	// A sequential stream of 1 MiB reads, as FUSE sends them (a few out of
	// order): once it has run raConfirm bytes, the next raWindow/2 of the
	// disk must be advised in every file it reads from.
	checkAhead := func(pos int64) {
		t.Helper()
		d.ra.wg.Wait()
		end := min(pos+min(raWindow, 2*pos)/2, size) // the window grows with the stream
		pieces, err := d.collect(nil, 0, make([]byte, end-pos), pos)
		if err != nil {
			t.Fatal(err)
		}
		for _, pc := range pieces {
			f := fileOf(d, pc.l)
			if !a.covers(f, pc.off, int64(len(pc.p))) {
				t.Fatalf("stream at %d MiB: %s bytes %d+%d not advised", pos>>20, pc.l.Path(), pc.off, len(pc.p))
			}
		}
	}
	const mib = 1 << 20
	for pos := int64(0); pos < size; pos += 4 * mib {
		for _, k := range []int64{0, 2, 1, 3} {
			read(pos+k*mib, mib)
		}
		if pos+4*mib >= raConfirm {
			checkAhead(pos + 4*mib)
		}
	}
	d.ra.wg.Wait()
	for f, rs := range a.ranges {
		fi, _ := f.Stat()
		for _, r := range rs {
			if r[0] < 0 || r[1] > fi.Size() || r[1] <= r[0] {
				t.Fatalf("advice %v outside the file (%d bytes)", r, fi.Size())
			}
		}
	}
}

// fileOf returns the file layer l of d reads.
func fileOf(d *Disk, l lay.Layer) File {
	for i := range d.layers {
		if d.layers[i] == l {
			return d.files[i]
		}
	}
	return nil
}
