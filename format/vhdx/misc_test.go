package vhdx_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

func TestProbe(t *testing.T) {
	if !vhdx.Probe([]byte("vhdxfile\x00\x00")) || vhdx.Probe([]byte("vhdxfil")) || vhdx.Probe([]byte("conectix")) {
		t.Fatal("Probe")
	}
}

// TestPendingLog: the log replayed in memory gives the model; the file is
// not written; a file shorter than the flushed offset is refused.
func TestPendingLog(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l := smallLayer(rng, false)
	l.pendingLog = true
	img := buildBytes(t, rng, l)
	orig := append([]byte(nil), img...)
	m := newMemFile(img)
	v, err := vhdx.Open("/x/p.vhdx", m, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if !v.LogReplayed() {
		t.Error("LogReplayed false")
	}
	in, err := v.Info()
	if err != nil {
		t.Fatal(err)
	}
	if in.Log.State != "replayed in memory" || in.Log.EntriesReplayed != 2 || in.Log.FirstSequence != 42 || in.Log.LastSequence != 43 {
		t.Errorf("log info %+v", in.Log)
	}
	got := make([]byte, 8<<20)
	if _, err := (chain{v}).ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, expect([]*tLayer{l}, 0, 8<<20)) {
		t.Fatal("replayed content differs from the model")
	}
	if !bytes.Equal(m.b, orig) {
		t.Fatal("the file was changed")
	}
	found := false
	for _, p := range v.Check() {
		found = found || strings.Contains(p.Msg, "pending")
	}
	if !found {
		t.Errorf("Check does not report the pending log: %v", v.Check())
	}
	// The file reads as extended with zeros to the log's LastFileOffset.
	l.logExtend = 3 << 20
	ext := buildBytes(t, rng, l)
	v, err = vhdx.Open("/x/e.vhdx", newMemFile(ext), vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := v.Info(); in.Log.LastFileOffset != int64(len(ext))+3<<20 {
		t.Errorf("LastFileOffset %d; file %d", in.Log.LastFileOffset, len(ext))
	}
	buf := bytes.Repeat([]byte{1}, 1<<20)
	if err := v.ReadData(buf, int64(len(ext))+1<<20); err != nil || !bytes.Equal(buf, make([]byte, 1<<20)) {
		t.Errorf("reading the extension: %v", err)
	}
	if err := v.ReadData(buf, int64(len(ext))+3<<20-1); !errors.Is(err, layer.ErrCorrupt) {
		t.Errorf("reading past LastFileOffset: %v", err)
	}
	// Truncated below FlushedFileOffset.
	_, err = vhdx.Open("/x/p.vhdx", newMemFile(img[:len(img)-4096]), vhdx.Options{ReadOnly: true})
	if !errors.Is(err, layer.ErrCorrupt) || !strings.Contains(err.Error(), "FlushedFileOffset") {
		t.Fatalf("truncated: %v", err)
	}
}

// fakeVHD is a layer of another format.
type fakeVHD struct{ layer.Layer }

func (fakeVHD) Path() string    { return "/x/parent.vhd" }
func (fakeVHD) Format() string  { return "vhd" }
func (fakeVHD) SectorSize() int { return 512 }

// TestMatchParent: identity rules of policy 7.
func TestMatchParent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	dir := t.TempDir()
	parent := smallLayer(rng, false)
	parent.name = "p.vhdx"
	child := smallLayer(rng, true)
	child.name = "c.vhdx"
	open := func(l *tLayer) *vhdx.Layer {
		t.Helper()
		if err := l.build(rng, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
		v, err := openFile(filepath.Join(dir, l.name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		return v
	}
	p := open(parent)
	link := tGUIDText(parent.dataWrite)
	other := "{11111111-2222-3333-4444-555555555555}"
	for _, c := range []struct {
		name    string
		kv      []tKV
		lss     int
		ok      bool
		warn    bool
		errText string
	}{
		{"linkage", []tKV{{"parent_linkage", link}}, 512, true, false, ""},
		{"upper-case linkage", []tKV{{"parent_linkage", upper(link)}}, 512, true, false, ""},
		{"wrong linkage", []tKV{{"parent_linkage", other}}, 512, false, false, "parent linkage mismatch"},
		{"linkage2 only", []tKV{{"parent_linkage", other}, {"parent_linkage2", link}}, 512, true, true, ""},
		{"zero linkage2", []tKV{{"parent_linkage", other}, {"parent_linkage2", "{00000000-0000-0000-0000-000000000000}"}}, 512, false, false, "mismatch"},
		{"sector size", []tKV{{"parent_linkage", link}}, 4096, false, false, "logical sectors"},
	} {
		t.Run(c.name, func(t *testing.T) {
			child.locator = append(c.kv, tKV{"relative_path", `.\p.vhdx`})
			child.lss = c.lss
			child.bits[7] = make([]bool, child.bs/int64(c.lss))
			v := open(child)
			err := v.MatchParent(p)
			if c.ok != (err == nil) {
				t.Fatalf("MatchParent: %v; want ok=%v", err, c.ok)
			}
			if err != nil {
				if !errors.Is(err, layer.ErrParentMismatch) || !strings.Contains(err.Error(), c.errText) ||
					!strings.Contains(err.Error(), "c.vhdx") || !strings.Contains(err.Error(), "p.vhdx") {
					t.Errorf("error %q", err)
				}
			}
			if got := len(v.Warnings()) > 0; got != c.warn {
				t.Errorf("warnings %v; want some: %v", v.Warnings(), c.warn)
			}
			err = v.MatchParent(fakeVHD{})
			if !errors.Is(err, layer.ErrParentMismatch) || !strings.Contains(err.Error(), "must be VHDX") || !strings.Contains(err.Error(), "parent.vhd") {
				t.Errorf("VHD parent: %v", err)
			}
		})
	}
}

// TestParentCandidates: policy 7's order and the Windows-only fallbacks.
func TestParentCandidates(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	dir := t.TempDir()
	child := smallLayer(rng, true)
	child.name = "c.vhdx"
	child.locator = []tKV{
		{"absolute_win32_path", `\\?\C:\VMs\base.vhdx`},
		{"parent_linkage", "{01020304-0506-0708-090a-0b0c0d0e0f10}"},
		{"volume_path", `\\?\Volume{0eba351e-5634-46d6-a8cf-4ddc2d6ac0b9}\VMs\vol.vhdx`},
		{"relative_path", `..\sub\rel.vhdx`},
	}
	if err := child.build(rng, filepath.Join(dir, "c.vhdx")); err != nil {
		t.Fatal(err)
	}
	v, err := openFile(filepath.Join(dir, "c.vhdx"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ref := v.Parent()
	want := []layer.Candidate{
		{Source: "relative_path", Raw: `..\sub\rel.vhdx`, Path: filepath.Join(filepath.Dir(dir), "sub", "rel.vhdx")},
		{Source: "volume_path (basename)", Raw: `\\?\Volume{0eba351e-5634-46d6-a8cf-4ddc2d6ac0b9}\VMs\vol.vhdx`, Path: filepath.Join(dir, "vol.vhdx")},
		{Source: "absolute_win32_path (basename)", Raw: `\\?\C:\VMs\base.vhdx`, Path: filepath.Join(dir, "base.vhdx")},
	}
	if fmt.Sprint(ref.Candidates) != fmt.Sprint(want) {
		t.Errorf("candidates\n%v\nwant\n%v", ref.Candidates, want)
	}
	if ref.ID != "{01020304-0506-0708-090a-0b0c0d0e0f10}" {
		t.Errorf("ID %s", ref.ID)
	}
}

// TestHuge64TiB opens an empty 64 TiB dynamic disk with 1 MiB blocks (a
// 512 MiB BAT) and measures time and memory; then maps the whole disk.
func TestHuge64TiB(t *testing.T) {
	rng := rand.New(rand.NewPCG(64, 64))
	dir := t.TempDir()
	l := &tLayer{name: "huge.vhdx", id: 1, size: 64 << 40, bs: 1 << 20, lss: 512, pss: 4096,
		states: map[int64]int{}, bits: map[int64][]bool{}}
	p := filepath.Join(dir, l.name)
	if err := l.build(rng, p); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	v, err := openFile(p)
	el := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	runtime.ReadMemStats(&m1)
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("open of an empty 64 TiB VHDX: %v, %d KiB allocated", el, alloc>>10)
	if el > 200*time.Millisecond || alloc > 64<<20 {
		t.Errorf("open took %v and %d bytes; want < 200 ms and < 64 MiB", el, alloc)
	}
	start = time.Now()
	runs, err := v.Map(nil, 0, v.Size())
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("Map of the whole disk: %v, %d runs, heap in use %d MiB", time.Since(start), len(runs), m1.HeapInuse>>20)
	if len(runs) != 1 || runs[0].State != layer.Parent || runs[0].Len != 64<<40 {
		t.Errorf("runs %v", runs)
	}
	if m1.HeapInuse > 64<<20 {
		t.Errorf("heap in use %d bytes after mapping the disk", m1.HeapInuse)
	}
}

// TestConcurrentReads reads a differencing chain from many goroutines
// (run it with -race).
func TestConcurrentReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	dir := t.TempDir()
	layers := makeChain(t, rng, dir, 0, 2, true)
	ch, err := openChain(filepath.Join(dir, layers[0].name), openFile)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	offs := interesting(layers)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < 40; i++ {
				off := max(0, min(offs[r.IntN(len(offs))]-r.Int64N(4096), layers[0].size-1))
				n := min(1+r.Int64N(256<<10), layers[0].size-off)
				got := make([]byte, n)
				if _, err := ch.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, expect(layers, off, n)) {
					errs <- fmt.Errorf("read %d+%d differs from the model", off, n)
					return
				}
			}
		}(uint64(g))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// FuzzOpenVHDX opens arbitrary files and reads from them: never a panic or
// a hang. An input is a sparse file (see decodeSparse), so that a seed holds
// only the structures of an image (a few KiB) and the fuzzer mutates them.
// Seeds: builder images (dynamic, differencing, pending log) and the
// structures of the corpus's VHDX files.
func FuzzOpenVHDX(f *testing.F) {
	rng := rand.New(rand.NewPCG(8, 8))
	for _, diff := range []bool{false, true} {
		l := smallLayer(rng, diff)
		l.pendingLog = !diff
		l.userItem = true
		f.Add(encodeSparse(buildBytes(f, rng, l), nil))
	}
	for _, b := range corpusSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// As given, and with the CRCs of the headers and region tables
		// made right, so that mutations reach the fields behind them.
		fuzzOne(t, decodeSparse(data))
		sf := decodeSparse(data)
		for _, s := range [][2]int64{{64 << 10, 4 << 10}, {128 << 10, 4 << 10}, {192 << 10, 64 << 10}, {256 << 10, 64 << 10}} {
			sf.fixCRC(s[0], s[1])
		}
		fuzzOne(t, sf)
	})
}

func fuzzOne(t *testing.T, file layer.File) {
	{
		v, err := vhdx.Open("/fuzz/a.vhdx", file, vhdx.Options{ReadOnly: true})
		if err != nil {
			return
		}
		defer v.Close()
		v.Parent()
		v.MatchParent(v)
		v.Info()
		v.Check()
		size := v.Size()
		for _, off := range []int64{0, size / 2, max(0, size-(8<<20))} {
			n := min(8<<20, size-off)
			runs, err := v.Map(nil, off, n)
			if err != nil {
				continue
			}
			var sum int64
			buf := make([]byte, 64<<10)
			for _, r := range runs {
				sum += r.Len
				if r.State == layer.Data {
					v.ReadData(buf[:min(r.Len, int64(len(buf)))], r.FileOff)
				}
			}
			if sum != n {
				t.Fatalf("runs add up to %d for %d", sum, n)
			}
		}
	}
}

// corpusSeeds returns the structures (header section, log, BAT and
// metadata regions) of the corpus's VHDX files, sparsely encoded.
func corpusSeeds() [][]byte {
	dir := findCorpus()
	if dir == "" {
		return nil
	}
	var out [][]byte
	tmp, err := os.MkdirTemp("", "vhdx-seeds-")
	if err != nil {
		return nil
	}
	defer os.RemoveAll(tmp)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || !strings.Contains(p, ".vhdx") && !strings.Contains(p, ".avhdx") ||
			strings.Contains(p, ".expected") || fi.Size() > 4<<20 {
			return nil
		}
		b, err := readMaybeCompressed(p, 32<<20)
		if err != nil || b == nil {
			return nil
		}
		q := filepath.Join(tmp, "x.vhdx")
		if os.WriteFile(q, b, 0o644) != nil {
			return nil
		}
		v, err := openFile(q)
		if err != nil {
			return nil
		}
		in, err := v.Info()
		v.Close()
		if err != nil {
			return nil
		}
		keep := [][2]int64{{0, 1 << 20}, {in.Log.Offset, in.Log.Offset + in.Log.Length}}
		for _, r := range in.Regions {
			keep = append(keep, [2]int64{r.Off, r.Off + r.Length})
		}
		out = append(out, encodeSparse(b, keep))
		return nil
	})
	return out
}
