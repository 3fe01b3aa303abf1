package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// attackChain makes parent p.vhdx (size bytes, data written) and child
// c.avhdx over it (data written) in a temporary directory.
func attackChain(t *testing.T, size int64) (dir, parent, child string, model []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, uint64(size)))
	dir = t.TempDir()
	parent, child = filepath.Join(dir, "p.vhdx"), filepath.Join(dir, "c.avhdx")
	if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	model = make([]byte, size)
	writeModel(t, parent, model, rng, 5)
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	writeModel(t, child, model, rng, 5)
	return dir, parent, child, model
}

func TestAttackCommitLargerChild(t *testing.T) {
	_, parent, child, _ := attackChain(t, 4<<20)
	if _, err := Resize(child, 8<<20, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte("past the parent"), 6<<20); err != nil {
		t.Fatal(err)
	}
	d.Close()
	ps, cs := fileSum(t, parent), fileSum(t, child)
	_, err = Commit(child, CommitOptions{})
	t.Logf("commit: %v", err)
	if err == nil {
		t.Fatal("commit of a child larger than its parent succeeded")
	}
	if fileSum(t, parent) != ps || fileSum(t, child) != cs {
		t.Fatal("a refused commit changed a file")
	}
}

func TestAttackCommitReadOnlyParent(t *testing.T) {
	_, parent, child, _ := attackChain(t, 4<<20)
	if err := os.Chmod(parent, 0o444); err != nil {
		t.Fatal(err)
	}
	ps, cs := fileSum(t, parent), fileSum(t, child)
	_, err := Commit(child, CommitOptions{})
	t.Logf("commit: %v", err)
	if err == nil {
		t.Fatal("commit into a read-only parent succeeded")
	}
	if fileSum(t, parent) != ps || fileSum(t, child) != cs {
		t.Fatal("a refused commit changed a file")
	}
}

func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestAttackRelinkTargets(t *testing.T) {
	dir, parent, child, _ := attackChain(t, 4<<20)
	cs := fileSum(t, child)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard.avhdx")
	if err := os.Link(child, hard); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dir, "sym.avhdx")
	os.Symlink(child, sym)
	dev := filepath.Join(dir, "null")
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, int(1<<8|3)); err != nil {
		t.Logf("mknod: %v", err)
	}
	for _, np := range []string{sub, fifo, hard, sym, child, dev, filepath.Join(dir, "missing.vhdx"), "/dev/zero"} {
		_, err := Relink(child, np, nil)
		t.Logf("%s: %v", np, err)
		if err == nil {
			t.Errorf("relink to %s succeeded", np)
		} else if np != child && np != hard && np != sym && strings.Contains(err.Error(), "is a VHD") {
			t.Errorf("relink to %s: %v: it is not a VHD", np, err)
		}
		if fileSum(t, child) != cs {
			t.Fatalf("relink to %s changed the child", np)
		}
	}
	_ = parent
}

func TestAttackRelinkLocked(t *testing.T) {
	_, parent, child, _ := attackChain(t, 4<<20)
	d, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cs := fileSum(t, child)
	_, err = Relink(child, parent, nil)
	t.Logf("%v", err)
	if !errors.Is(err, ErrLocked) {
		t.Errorf("relink of a child in use: %v", err)
	}
	_, err = Commit(child, CommitOptions{})
	t.Logf("%v", err)
	if !errors.Is(err, ErrLocked) {
		t.Errorf("commit of a child in use: %v", err)
	}
	_, err = Resize(child, 8<<20, ResizeOptions{})
	t.Logf("%v", err)
	if !errors.Is(err, ErrLocked) {
		t.Errorf("resize of a child in use: %v", err)
	}
	_, err = Compact(child, CompactOptions{})
	t.Logf("%v", err)
	if !errors.Is(err, ErrLocked) {
		t.Errorf("compact of a child in use: %v", err)
	}
	if fileSum(t, child) != cs {
		t.Fatal("changed the child in use")
	}
}

// TestAttackRelinkFullMetadata fills the metadata region's free space with
// a user item: relink finds no room and must write nothing. Then the
// locator is moved to end exactly at the end of the region.
func TestAttackRelinkFullMetadata(t *testing.T) {
	_, parent, child, model := attackChain(t, 4<<20)
	in := vhdxInfo(t, child)
	var meta vhdx.Region
	for _, r := range in.Regions {
		if r.Name == "metadata" {
			meta = r
		}
	}
	end := meta.Off + 64<<10
	var loc vhdx.MetadataItem
	for _, it := range in.Metadata {
		end = max(end, it.Off+it.Length)
		if it.Name == "ParentLocator" {
			loc = it
		}
	}
	t.Logf("meta %+v end 0x%x items %d", meta, end, len(in.Metadata))
	// A user item from end to the region's end.
	n := len(in.Metadata)
	e := make([]byte, 32)
	copy(e, "userdefined-item")
	binary.LittleEndian.PutUint32(e[16:], uint32(end-meta.Off))
	binary.LittleEndian.PutUint32(e[20:], uint32(meta.Off+meta.Length-end))
	binary.LittleEndian.PutUint32(e[24:], 1)
	patchFile(t, child, meta.Off+32+32*int64(n), e)
	var c [2]byte
	binary.LittleEndian.PutUint16(c[:], uint16(n+1))
	patchFile(t, child, meta.Off+10, c[:])
	cs := fileSum(t, child)
	_, err := Relink(child, parent, nil)
	t.Logf("full: %v", err)
	if err == nil {
		t.Fatal("relink into a full metadata region succeeded")
	}
	if fileSum(t, child) != cs {
		t.Fatal("a refused relink changed the child")
	}
	// Now drop the user item, and put the locator at the very end.
	binary.LittleEndian.PutUint16(c[:], uint16(n))
	patchFile(t, child, meta.Off+10, c[:])
	patchFile(t, child, meta.Off+32+32*int64(n), make([]byte, 32))
	raw, _ := os.ReadFile(child)
	lb := raw[loc.Off : loc.Off+loc.Length]
	at := meta.Off + meta.Length - loc.Length
	patchFile(t, child, at, lb)
	patchFile(t, child, loc.Off, make([]byte, loc.Length))
	var o [4]byte
	binary.LittleEndian.PutUint32(o[:], uint32(at-meta.Off))
	eo := int64(-1)
	for i := 0; i < n; i++ {
		p := meta.Off + 32 + 32*int64(i)
		if bytes.Equal(raw[p:p+16], loc.ID[:]) {
			eo = p
		}
	}
	patchFile(t, child, eo+16, o[:])
	if ps := vhdxInfo(t, child); ps.ParentLocator == nil {
		t.Fatal("no locator")
	}
	if _, err := Relink(child, parent, nil); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, child, 4<<20); !bytes.Equal(got, model) {
		t.Fatal("the relinked chain does not read as the model")
	}
	checkClean(t, child)
}

// setLocator rewrites the parent locator of the VHDX at path to name rel
// with parent_linkage dw.
func setLocator(t *testing.T, path, rel string, dw vhdx.GUID) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := vhdx.Open(path, f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	kv := []vhdx.LocatorEntry{{Key: "parent_linkage", Value: "{" + dw.String() + "}"}, {Key: "relative_path", Value: rel}}
	if _, err := l.RewriteLocator(kv); err != nil {
		t.Fatal(err)
	}
}

func dataWriteGUID(t *testing.T, path string) vhdx.GUID {
	t.Helper()
	in := vhdxInfo(t, path)
	for _, h := range in.Headers {
		if h.Current {
			return h.Header.DataWriteGUID
		}
	}
	t.Fatal("no current header")
	return vhdx.GUID{}
}

func TestAttackCycles(t *testing.T) {
	t.Run("self", func(t *testing.T) {
		_, _, child, _ := attackChain(t, 4<<20)
		setLocator(t, child, `.\c.avhdx`, dataWriteGUID(t, child))
		attackAll(t, child, "")
	})
	t.Run("hard link", func(t *testing.T) {
		dir, _, child, _ := attackChain(t, 4<<20)
		if err := os.Link(child, filepath.Join(dir, "h.avhdx")); err != nil {
			t.Fatal(err)
		}
		setLocator(t, child, `.\h.avhdx`, dataWriteGUID(t, child))
		attackAll(t, child, "")
	})
	t.Run("fifo parent", func(t *testing.T) {
		dir, parent, child, _ := attackChain(t, 4<<20)
		if err := syscall.Mkfifo(filepath.Join(dir, "f.vhdx"), 0o644); err != nil {
			t.Fatal(err)
		}
		setLocator(t, child, `.\f.vhdx`, dataWriteGUID(t, parent))
		attackAll(t, child, "")
	})
	t.Run("two", func(t *testing.T) {
		dir, _, child, _ := attackChain(t, 4<<20)
		grand := filepath.Join(dir, "g.avhdx")
		if err := vhdx.Create(grand, vhdx.CreateOptions{Parent: child}); err != nil {
			t.Fatal(err)
		}
		writeModel(t, grand, make([]byte, 4<<20), rand.New(rand.NewPCG(1, 2)), 3)
		setLocator(t, child, `.\g.avhdx`, dataWriteGUID(t, grand))
		attackAll(t, grand, child)
		attackAll(t, child, grand)
	})
}

// attackAll runs resize, compact, commit and relink (to other) on path,
// which must all fail without changing a file of the directory.
func attackAll(t *testing.T, path, other string) {
	t.Helper()
	dir := filepath.Dir(path)
	sums := func() map[string][32]byte {
		m := map[string][32]byte{}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Type().IsRegular() {
				m[e.Name()] = fileSum(t, filepath.Join(dir, e.Name()))
			}
		}
		return m
	}
	before := sums()
	check := func(op string, err error) {
		t.Helper()
		t.Logf("%s: %v", op, err)
		if err == nil {
			t.Errorf("%s of %s succeeded", op, path)
		}
		after := sums()
		if len(after) != len(before) {
			t.Fatalf("%s: files %v, were %v", op, after, before)
		}
		for k, v := range before {
			if after[k] != v {
				t.Fatalf("%s changed %s", op, k)
			}
		}
	}
	_, err := Resize(path, 8<<20, ResizeOptions{})
	check("resize", err)
	_, err = Resize(path, 2<<20, ResizeOptions{Shrink: true})
	check("shrink", err)
	_, err = Compact(path, CompactOptions{})
	check("compact", err)
	_, err = Commit(path, CommitOptions{})
	check("commit", err)
	_, err = Commit(path, CommitOptions{Force: true, Remove: true})
	check("commit --force --remove", err)
	if other != "" {
		_, err = Relink(path, other, nil)
		check("relink", err)
	}
}

func regionOf(in *vhdx.Info, name string) vhdx.Region {
	for _, r := range in.Regions {
		if r.Name == name {
			return r
		}
	}
	return vhdx.Region{}
}

func putU64(t *testing.T, path string, off int64, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	patchFile(t, path, off, b[:])
}

// fixRegionCRC recomputes the checksum of the region table at off.
func fixRegionCRC(t *testing.T, path string, off int64) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), raw[off:off+64<<10]...)
	clear(b[4:8])
	var c [4]byte
	binary.LittleEndian.PutUint32(c[:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	patchFile(t, path, off+4, c[:])
}

// TestAttackDamaged damages the parent or the child of a chain in ways the
// structure check must catch; every operation on the child (and on the
// parent) must refuse without changing a file.
func TestAttackDamaged(t *testing.T) {
	type damage func(t *testing.T, path string)
	batEntries := func(t *testing.T, path string) (vhdx.Region, []uint64) {
		in := vhdxInfo(t, path)
		bat := regionOf(in, "BAT")
		raw, _ := os.ReadFile(path)
		var es []uint64
		for i := int64(0); i < in.BATEntries; i++ {
			es = append(es, binary.LittleEndian.Uint64(raw[bat.Off+8*i:]))
		}
		return bat, es
	}
	firstTwo := func(t *testing.T, path string) (vhdx.Region, int, int, []uint64) {
		bat, es := batEntries(t, path)
		a, b := -1, -1
		for i, e := range es {
			if e&7 == 6 || e&7 == 7 {
				if a < 0 {
					a = i
				} else if b < 0 {
					b = i
				}
			}
		}
		if b < 0 {
			t.Fatal("fewer than two blocks")
		}
		return bat, a, b, es
	}
	cases := map[string]damage{
		"shared block": func(t *testing.T, path string) {
			bat, a, b, es := firstTwo(t, path)
			putU64(t, path, bat.Off+8*int64(b), es[a]&^7|es[b]&7)
		},
		"block past EOF": func(t *testing.T, path string) {
			bat, _, b, es := firstTwo(t, path)
			fi, _ := os.Stat(path)
			putU64(t, path, bat.Off+8*int64(b), uint64((fi.Size()+(1<<20))&^(1<<20-1))|es[b]&7)
		},
		"block in metadata": func(t *testing.T, path string) {
			bat, _, b, es := firstTwo(t, path)
			meta := regionOf(vhdxInfo(t, path), "metadata")
			putU64(t, path, bat.Off+8*int64(b), uint64(meta.Off)|es[b]&7)
		},
		"block in BAT": func(t *testing.T, path string) {
			bat, _, b, es := firstTwo(t, path)
			putU64(t, path, bat.Off+8*int64(b), uint64(bat.Off)|es[b]&7)
		},
		"block in headers": func(t *testing.T, path string) {
			bat, _, b, es := firstTwo(t, path)
			putU64(t, path, bat.Off+8*int64(b), es[b]&7)
		},
		"region table 2 bad": func(t *testing.T, path string) {
			patchFile(t, path, 256<<10+100, []byte{1})
		},
		"metadata items overlap": func(t *testing.T, path string) {
			in := vhdxInfo(t, path)
			meta := regionOf(in, "metadata")
			// The second item's entry gets the first one's offset.
			raw, _ := os.ReadFile(path)
			off0 := raw[meta.Off+32+16 : meta.Off+32+20]
			patchFile(t, path, meta.Off+64+16, off0)
		},
		"BAT region overlaps metadata": func(t *testing.T, path string) {
			in := vhdxInfo(t, path)
			meta := regionOf(in, "metadata")
			bat := regionOf(in, "BAT")
			raw, _ := os.ReadFile(path)
			for _, ro := range []int64{192 << 10, 256 << 10} {
				for i := int64(0); i < 2; i++ {
					eo := ro + 16 + 32*i
					if binary.LittleEndian.Uint64(raw[eo+16:]) == uint64(bat.Off) {
						putU64(t, path, eo+16, uint64(meta.Off))
					}
				}
				fixRegionCRC(t, path, ro)
			}
		},
	}
	for name, dmg := range cases {
		for _, who := range []string{"parent", "child"} {
			t.Run(name+"/"+who, func(t *testing.T) {
				_, parent, child, _ := attackChain(t, 8<<20)
				target := child
				if who == "parent" {
					target = parent
				}
				dmg(t, target)
				if who == "child" {
					attackAll(t, child, parent)
					return
				}
				attackAll(t, parent, "")
				// The child is sound: only commit writes the parent.
				ps, cs := fileSum(t, parent), fileSum(t, child)
				for _, o := range []CommitOptions{{}, {Force: true, Remove: true}} {
					if _, err := Commit(child, o); err == nil {
						t.Errorf("commit %+v into a damaged parent succeeded", o)
					}
					if fileSum(t, parent) != ps || fileSum(t, child) != cs {
						t.Fatal("a refused commit changed a file")
					}
				}
			})
		}
	}
}

// TestAttackResizeFixedInLastBlock grows a fixed VHDX whose size is not a
// whole number of blocks inside its last block: no new block, nothing to
// allocate (fallocate of 0 bytes failed with EINVAL after the header update).
func TestAttackResizeFixedInLastBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.vhdx")
	const size = 20<<20 + 4096
	if err := vhdx.Create(path, vhdx.CreateOptions{Size: size, BlockSize: 2 << 20, Fixed: true}); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size+8192)
	writeModel(t, path, model[:size], rand.New(rand.NewPCG(3, 3)), 5)
	if _, err := Resize(path, size+8192, ResizeOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, path, size+8192); !bytes.Equal(got, model) {
		t.Fatal("the grown file does not read as the model")
	}
	checkClean(t, path)
}

// manyRunsChild makes a 1 GiB child of 1 MiB blocks whose 1024 blocks are
// all PARTIALLY_PRESENT with every other sector present (2 Mi runs of one
// sector): block 0 holds 0xA5 sectors, the others zeros (sparse space).
// model is what the chain reads.
func manyRunsChild(t *testing.T) (parent, child string, model []byte) {
	const size = 1 << 30
	dir := t.TempDir()
	parent, child = filepath.Join(dir, "p.vhdx"), filepath.Join(dir, "c.avhdx")
	if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	model = make([]byte, size)
	writeModel(t, parent, model[:4<<20], rand.New(rand.NewPCG(1, 1)), 3)
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	// Block 0: every other sector written, through the library.
	d, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	sec := bytes.Repeat([]byte{0xA5}, 512)
	for s := int64(0); s < 2048; s += 2 {
		if _, err := d.WriteAt(sec, s*512); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	// Blocks 1-1023: the same bitmap, each at its own (sparse, zero) space
	// past the end of the file.
	in := vhdxInfo(t, child)
	if in.ChunkRatio != 4096 {
		t.Fatalf("chunk ratio %d", in.ChunkRatio)
	}
	bat := regionOf(in, "BAT")
	raw, err := os.ReadFile(child)
	if err != nil {
		t.Fatal(err)
	}
	e0 := binary.LittleEndian.Uint64(raw[bat.Off:])
	eb := binary.LittleEndian.Uint64(raw[bat.Off+8*4096:])
	if e0&7 != 7 || eb&7 != 6 {
		t.Fatalf("block 0 entry 0x%x, bitmap entry 0x%x", e0, eb)
	}
	bfo := int64(eb>>20) << 20
	bm := raw[bfo : bfo+256]
	end := (int64(len(raw)) + 1<<20 - 1) &^ (1<<20 - 1)
	for b := int64(1); b < 1024; b++ {
		patchFile(t, child, bfo+256*b, bm)
		putU64(t, child, bat.Off+8*b, uint64(end+(b-1)<<20)|7)
	}
	if err := os.Truncate(child, end+1023<<20); err != nil {
		t.Fatal(err)
	}
	for b := int64(0); b < 1024; b++ {
		for s := int64(0); s < 2048; s += 2 {
			o := b<<20 + s*512
			if b == 0 {
				copy(model[o:o+512], sec)
			} else {
				clear(model[o : o+512])
			}
		}
	}
	checkClean(t, child)
	return parent, child, model
}

// heapGrowth runs fn and returns by how much the heap in use grew at most
// meanwhile (sampled every 2 ms).
func heapGrowth(fn func()) int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return int64(peak.Load()) - int64(base)
}

// TestAttackCommitManyRuns commits manyRunsChild's child. The commit maps
// the child a block at a time: the heap it uses stays far below the 48 MiB
// the whole disk's runs take (268 MiB with their slice's growth), and the
// parent reads as the model afterwards.
func TestAttackCommitManyRuns(t *testing.T) {
	parent, child, model := manyRunsChild(t)
	var res *CommitResult
	var err error
	grew := heapGrowth(func() { res, err = Commit(child, CommitOptions{Remove: true}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v; heap grew by %d MiB at most", res, grew>>20)
	if res.Blocks != 1024 || res.Bytes != 512<<20 {
		t.Errorf("result %+v", res)
	}
	if grew > 32<<20 {
		t.Errorf("the commit's heap grew by %d MiB", grew>>20)
	}
	if got := readAll(t, parent, int64(len(model))); !bytes.Equal(got, model) {
		t.Fatal("the parent does not read as the model")
	}
	checkClean(t, parent)
}

// TestAttackShrinkManyRuns shrinks manyRunsChild's child to 1 MiB: the
// check that the cut-off range stores only zeros maps it a block at a time.
func TestAttackShrinkManyRuns(t *testing.T) {
	_, child, model := manyRunsChild(t)
	var err error
	grew := heapGrowth(func() { _, err = Resize(child, 1<<20, ResizeOptions{Shrink: true}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("heap grew by %d MiB at most", grew>>20)
	if grew > 32<<20 {
		t.Errorf("the shrink's heap grew by %d MiB", grew>>20)
	}
	if got := readAll(t, child, 1<<20); !bytes.Equal(got, model[:1<<20]) {
		t.Fatal("the shrunk child does not read as the model")
	}
	checkClean(t, child)
}

// TestAttackRelinkInvalidUTF8 moves the parent into a directory whose name
// is not UTF-8 (a locator holds UTF-16 text, which cannot name it): relink
// must refuse rather than record a path with U+FFFD in it.
func TestAttackRelinkInvalidUTF8(t *testing.T) {
	dir, parent, child, _ := attackChain(t, 4<<20)
	bad := filepath.Join(dir, "d\xff\xfe")
	if err := os.Mkdir(bad, 0o755); err != nil {
		t.Skipf("the filesystem refuses a non-UTF-8 name: %v", err)
	}
	moved := filepath.Join(bad, "p.vhdx")
	if err := os.Rename(parent, moved); err != nil {
		t.Fatal(err)
	}
	cs := fileSum(t, child)
	_, err := Relink(child, moved, nil)
	t.Logf("relink: %v", err)
	if err == nil {
		t.Fatal("relink recorded a path the locator cannot hold")
	}
	if fileSum(t, child) != cs {
		t.Fatal("a refused relink changed the child")
	}
}

// TestAttackBadLocator damages the child's parent locator (a value past
// the item, no entries, a key listed twice): every operation refuses with
// no file changed.
func TestAttackBadLocator(t *testing.T) {
	locOf := func(t *testing.T, path string) int64 {
		for _, it := range vhdxInfo(t, path).Metadata {
			if it.Name == "ParentLocator" {
				return it.Off
			}
		}
		t.Fatal("no locator")
		return 0
	}
	for name, dmg := range map[string]func(t *testing.T, path string, lo int64){
		"value past the item": func(t *testing.T, path string, lo int64) {
			var b [4]byte
			binary.LittleEndian.PutUint32(b[:], 0xFFFFFF00)
			patchFile(t, path, lo+20+4, b[:])
		},
		"no entries": func(t *testing.T, path string, lo int64) {
			patchFile(t, path, lo+18, []byte{0, 0})
		},
		"key twice": func(t *testing.T, path string, lo int64) {
			raw, _ := os.ReadFile(path)
			// Entry 1's key becomes entry 0's.
			patchFile(t, path, lo+20+12, raw[lo+20:lo+24])
			patchFile(t, path, lo+20+12+8, raw[lo+20+8:lo+20+10])
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, parent, child, _ := attackChain(t, 4<<20)
			dmg(t, child, locOf(t, child))
			attackAll(t, child, parent)
		})
	}
}

// TestAttackCommitLinkage2 commits a child that matches its parent only
// through parent_linkage2 (as a cut-short commit leaves it): the commit
// goes through and leaves parent_linkage naming the parent, and no
// parent_linkage2.
func TestAttackCommitLinkage2(t *testing.T) {
	_, parent, child, model := attackChain(t, 4<<20)
	dw := dataWriteGUID(t, parent)
	other := dw
	other[0] ^= 0xFF
	f, err := os.OpenFile(child, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := vhdx.Open(child, f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.RewriteLocator(withLinkage(l.Locator(), other, dw)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := Commit(child, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, child, 4<<20); !bytes.Equal(got, model) {
		t.Fatal("the chain does not read as the model")
	}
	loc := vhdxInfo(t, child).ParentLocator.Entries
	now := "{" + dataWriteGUID(t, parent).String() + "}"
	for _, e := range loc {
		if e.Key == "parent_linkage2" || e.Key == "parent_linkage" && e.Value != now {
			t.Fatalf("locator after the commit: %v (parent %s)", loc, now)
		}
	}
	checkClean(t, child)
	checkClean(t, parent)
}

// TestAttackRelinkThroughSymlink relinks a child named through a symbolic
// link in another directory: the relative path is recorded from the
// directory of the file itself (it was from the link's, which named no
// parent once the directory moved).
func TestAttackRelinkThroughSymlink(t *testing.T) {
	dir, parent, child, model := attackChain(t, 4<<20)
	other := filepath.Join(t.TempDir(), "links")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(other, "c.avhdx")
	if err := os.Symlink(child, sym); err != nil {
		t.Fatal(err)
	}
	if _, err := Relink(sym, parent, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(sym); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link is gone: %v", err)
	}
	var rel string
	for _, e := range vhdxInfo(t, child).ParentLocator.Entries {
		if e.Key == "relative_path" {
			rel = e.Value
		}
	}
	if rel != `.\p.vhdx` {
		t.Fatalf("relative_path %q", rel)
	}
	// The directory moves: the relative path still finds the parent.
	moved := dir + "-moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(moved, dir)
	if got := readAll(t, filepath.Join(moved, "c.avhdx"), 4<<20); !bytes.Equal(got, model) {
		t.Fatal("the moved chain does not read as the model")
	}
}

// TestAttackCompactVerify: the check of a rewritten image compares it with
// the image where either shows data (it looked only where the image did,
// so data appearing in a range of zeros went unseen).
func TestAttackCompactVerify(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.vhdx"), filepath.Join(dir, "b.vhdx")
	for _, p := range []string{a, b} {
		if err := vhdx.Create(p, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	writeModel(t, b, make([]byte, 8<<20), rand.New(rand.NewPCG(4, 4)), 2)
	d, err := Open(a, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.sameAs(b, &Options{}); err == nil {
		t.Fatal("an image with data was taken for a copy of an empty one")
	}
}

// TestAttackResizeRefusals: sizes resize must refuse (0, negative, past
// 64 TiB, not a multiple of the logical sector, smaller without Shrink),
// with the file unchanged.
func TestAttackResizeRefusals(t *testing.T) {
	for _, lss := range []int{512, 4096} {
		path := filepath.Join(t.TempDir(), "a.vhdx")
		if err := vhdx.Create(path, vhdx.CreateOptions{Size: 8 << 20, SectorSize: lss}); err != nil {
			t.Fatal(err)
		}
		writeModel(t, path, make([]byte, 8<<20), rand.New(rand.NewPCG(5, 5)), 2)
		sum := fileSum(t, path)
		for _, c := range []struct {
			size   int64
			shrink bool
		}{{0, true}, {-4096, true}, {64<<40 + 1, false}, {64<<40 + 4096, false}, {8<<20 + 256, false}, {8<<20 + int64(lss)/2, false}, {4 << 20, false}} {
			if _, err := Resize(path, c.size, ResizeOptions{Shrink: c.shrink}); err == nil {
				t.Errorf("lss %d: resize to %d accepted", lss, c.size)
			}
			if fileSum(t, path) != sum {
				t.Fatalf("lss %d: a refused resize to %d changed the file", lss, c.size)
			}
		}
	}
}
