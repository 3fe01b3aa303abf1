package format

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// memCommitOptions makes Commit work on the files of fsys.
func memCommitOptions(fsys memFS, open func(string, bool) (File, error)) CommitOptions {
	if open == nil {
		open = fsys.open
	}
	return CommitOptions{
		OpenFile: open,
		readDir: func(dir string) ([]string, error) {
			var out []string
			for p := range fsys {
				if filepath.Dir(p) == dir {
					out = append(out, p)
				}
			}
			slices.Sort(out)
			return out, nil
		},
		remove: func(p string) error {
			if _, ok := fsys[p]; !ok {
				return os.ErrNotExist
			}
			delete(fsys, p)
			return nil
		},
	}
}

// readFlat reads the whole chain whose top is path.
func readFlat(t *testing.T, fsys memFS, path string) ([]byte, *Disk) {
	t.Helper()
	d, err := Open(path, &Options{ReadOnly: true, OpenFile: fsys.open})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	got := make([]byte, d.Size())
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return got, d
}

// commitChains are the chains the commit tests use, top (the child to
// commit) first: over a dynamic, a fixed and a differencing parent, with
// block sizes that differ between child and parent and a partial last block.
func commitChains(rng *rand.Rand) map[string][]*tLayer {
	const size = 1<<20 + 5*512
	return map[string][]*tLayer{
		"over-dynamic":      {randomLayer(rng, 4, size, 64<<10, 1), randomLayer(rng, 3, size, 32<<10, 2)},
		"over-fixed":        {randomLayer(rng, 4, size, 32<<10, 3), randomLayer(rng, 2, size, 0, 4)},
		"over-differencing": {randomLayer(rng, 4, size, 16<<10, 5), randomLayer(rng, 4, size, 64<<10, 6), randomLayer(rng, 3, size, 128<<10, 7)},
		"child-smaller":     {randomLayer(rng, 4, size-3*512, 64<<10, 8), randomLayer(rng, 3, size, 64<<10, 9)},
	}
}

// TestCommitModel writes randomly into the child of each chain (a flat model
// beside it), commits, and compares: the parent alone reads as the model
// did, the emptied child still does, the grandparent is untouched, and
// every image checks clean.
func TestCommitModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 51))
	for name, chain := range commitChains(rng) {
		t.Run(name, func(t *testing.T) {
			fsys := chainFS(chain)
			model := flat(chain)
			d, err := Open("/img/layer0.vhd", fsys.opts())
			if err != nil {
				t.Fatal(err)
			}
			for range 60 {
				off, p := randomWrite(rng, d.Size(), chain[0].blockSize)
				if _, err := d.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
			}
			d.Close()
			var grand []byte
			if len(chain) > 2 {
				grand = fsys["/img/layer2.vhd"].bytes()
			}
			parentBefore, _ := readFlat(t, fsys, "/img/layer1.vhd")
			var calls int
			o := memCommitOptions(fsys, nil)
			o.Progress = func(done, total int64) {
				calls++
				if done > total {
					t.Errorf("progress %d of %d", done, total)
				}
			}
			res, err := Commit("/img/layer0.vhd", o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Parent != "/img/layer1.vhd" || res.Blocks == 0 || res.Bytes == 0 || calls == 0 {
				t.Errorf("result %+v after %d progress calls", res, calls)
			}
			got, pd := readFlat(t, fsys, "/img/layer1.vhd")
			if probs := pd.Check(); len(probs) > 0 {
				t.Errorf("parent check: %v", probs)
			}
			pd.Close()
			want := append(append([]byte(nil), model...), parentBefore[len(model):]...) // a smaller child leaves the parent's tail
			if !bytes.Equal(got, want) {
				t.Fatalf("parent after the commit differs from the model at byte %d", firstDiff(got, want))
			}
			got, cd := readFlat(t, fsys, "/img/layer0.vhd")
			defer cd.Close()
			if !bytes.Equal(got, model) {
				t.Fatalf("emptied child differs from the model at byte %d", firstDiff(got, model))
			}
			if probs := cd.Check(); len(probs) > 0 {
				t.Errorf("chain check: %v", probs)
			}
			if n := cd.Layers()[0].AllocatedBlocks; n != 0 {
				t.Errorf("child still has %d blocks", n)
			}
			if n := len(fsys["/img/layer0.vhd"].bytes()); n > 64<<10 {
				t.Errorf("emptied child is %d bytes; want only its metadata", n)
			}
			if grand != nil && !bytes.Equal(fsys["/img/layer2.vhd"].bytes(), grand) {
				t.Error("the grandparent was modified")
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// fileOp is one operation on a file, recorded in the order the operations
// of every file were issued.
type fileOp struct {
	path string
	kind byte // 'w' write, 't' truncate, 's' sync
	off  int64
	p    []byte
}

// opFile records the writes, truncations and syncs of a memFile into log.
type opFile struct {
	*memFile
	path string
	log  *[]fileOp
}

func (f opFile) WriteAt(p []byte, off int64) (int, error) {
	*f.log = append(*f.log, fileOp{f.path, 'w', off, append([]byte(nil), p...)})
	return f.memFile.WriteAt(p, off)
}

func (f opFile) Truncate(n int64) error {
	*f.log = append(*f.log, fileOp{f.path, 't', n, nil})
	return f.memFile.Truncate(n)
}

func (f opFile) Sync() error {
	*f.log = append(*f.log, fileOp{path: f.path, kind: 's'})
	return nil
}

// replay returns the files of base with the first k operations of log applied.
func replay(base map[string][]byte, log []fileOp, k int) memFS {
	files := map[string][]byte{}
	for p, b := range base {
		files[p] = append([]byte(nil), b...)
	}
	for _, op := range log[:k] {
		b := files[op.path]
		switch op.kind {
		case 'w':
			if end := op.off + int64(len(op.p)); end > int64(len(b)) {
				b = append(b, make([]byte, end-int64(len(b)))...)
			}
			copy(b[op.off:], op.p)
		case 't':
			if op.off <= int64(len(b)) {
				b = b[:op.off]
			} else {
				b = append(b, make([]byte, op.off-int64(len(b)))...)
			}
		}
		files[op.path] = b
	}
	fsys := memFS{}
	for p, b := range files {
		fsys[p] = newMemFile(p, b)
	}
	return fsys
}

// TestCommitCrashCuts commits each chain once, recording every write,
// truncation and sync of the child and the parent in order; then, for a cut
// after every recorded operation, the files as they would be on disk must
// open as a chain that reads the model's flat view and checks clean, and the
// parent alone must check clean.
func TestCommitCrashCuts(t *testing.T) {
	rng := rand.New(rand.NewPCG(52, 52))
	for name, chain := range commitChains(rng) {
		t.Run(name, func(t *testing.T) {
			fsys := chainFS(chain)
			d, err := Open("/img/layer0.vhd", fsys.opts())
			if err != nil {
				t.Fatal(err)
			}
			for range 30 {
				off, p := randomWrite(rng, d.Size(), chain[0].blockSize)
				if _, err := d.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
			}
			d.Close()
			model, _ := readFlat(t, fsys, "/img/layer0.vhd")
			base := map[string][]byte{}
			for p, f := range fsys {
				base[p] = f.bytes()
			}
			var log []fileOp
			open := func(path string, write bool) (File, error) {
				f, ok := fsys[path]
				if !ok {
					return nil, os.ErrNotExist
				}
				return opFile{f, path, &log}, nil
			}
			if _, err := Commit("/img/layer0.vhd", memCommitOptions(fsys, open)); err != nil {
				t.Fatal(err)
			}
			var parentSynced, childWritten bool
			for k := 0; k <= len(log); k++ {
				if k > 0 {
					op := log[k-1]
					if op.path == "/img/layer1.vhd" && op.kind == 's' {
						parentSynced = true
					}
					if op.path == "/img/layer0.vhd" && op.kind != 's' {
						childWritten = true
						if !parentSynced {
							t.Fatalf("operation %d writes the child before the parent is synced", k)
						}
					}
					if op.path != "/img/layer0.vhd" && op.path != "/img/layer1.vhd" {
						t.Fatalf("operation %d touches %s", k, op.path)
					}
				}
				cut := replay(base, log, k)
				got, cd := readFlat(t, cut, "/img/layer0.vhd")
				if !bytes.Equal(got, model) {
					t.Fatalf("cut after %d of %d operations: the chain differs from the model at byte %d", k, len(log), firstDiff(got, model))
				}
				if probs := cd.Check(); len(probs) > 0 {
					t.Fatalf("cut after %d of %d operations: check: %v", k, len(log), probs)
				}
				cd.Close()
				// Each image must also open for writing (not damaged).
				for _, p := range []string{"/img/layer0.vhd", "/img/layer1.vhd"} {
					w, err := Open(p, cut.opts())
					if err != nil {
						t.Fatalf("cut after %d operations: %s does not open for writing: %v", k, p, err)
					}
					w.Close()
				}
			}
			if !childWritten {
				t.Fatal("the commit never wrote the child")
			}
			t.Logf("%d operations, every cut checked", len(log))
		})
	}
}

// TestCommitRefusals: siblings of the parent beside it (listed; --force
// commits anyway), children of a child to remove, a dynamic disk, a VHDX
// image.
func TestCommitRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(53, 53))
	chain := commitChains(rng)["over-dynamic"]
	fsys := chainFS(chain)
	sib := randomLayer(rng, 4, chain[0].size, 64<<10, 20)
	sib.parentUUID, sib.parentName, sib.w2ru = chain[1].uuid, "layer1.vhd", `.\layer1.vhd`
	fsys["/img/sibling.vhd"] = newMemFile("/img/sibling.vhd", sib.image())
	fsys["/img/notes.txt"] = newMemFile("/img/notes.txt", []byte("not an image"))
	before := map[string][]byte{}
	for p, f := range fsys {
		before[p] = f.bytes()
	}
	_, err := Commit("/img/layer0.vhd", memCommitOptions(fsys, nil))
	var se *SiblingError
	if !errors.As(err, &se) || !slices.Equal(se.Siblings, []string{"/img/sibling.vhd"}) {
		t.Fatalf("commit with a sibling: %v, want a SiblingError naming /img/sibling.vhd", err)
	}
	for p, b := range before {
		if !bytes.Equal(fsys[p].bytes(), b) {
			t.Errorf("refused commit changed %s", p)
		}
	}
	// A grandchild of the parent beside the child: removing the child is refused.
	gc := randomLayer(rng, 4, chain[0].size, 64<<10, 21)
	gc.parentUUID, gc.parentName, gc.w2ru = chain[0].uuid, "layer0.vhd", `.\layer0.vhd`
	fsys["/img/grandchild.vhd"] = newMemFile("/img/grandchild.vhd", gc.image())
	delete(fsys, "/img/sibling.vhd")
	o := memCommitOptions(fsys, nil)
	o.Remove = true
	var ce *ChildrenError
	if _, err := Commit("/img/layer0.vhd", o); !errors.As(err, &ce) || !slices.Equal(ce.Children, []string{"/img/grandchild.vhd"}) {
		t.Fatalf("remove with a child: %v, want a ChildrenError naming /img/grandchild.vhd", err)
	}
	o.Force = true
	res, err := Commit("/img/layer0.vhd", o)
	if err != nil || !res.Removed {
		t.Fatalf("forced commit --remove: %+v, %v", res, err)
	}
	if _, ok := fsys["/img/layer0.vhd"]; ok {
		t.Error("the child was not removed")
	}
	if _, err := Commit("/img/layer1.vhd", memCommitOptions(fsys, nil)); err == nil || !strings.Contains(err.Error(), "not a differencing disk") {
		t.Errorf("commit of a dynamic disk: %v", err)
	}
	fsys["/img/x.vhdx"] = newMemFile("/img/x.vhdx", append([]byte("vhdxfile"), make([]byte, 1<<20)...))
	if _, err := Commit("/img/x.vhdx", memCommitOptions(fsys, nil)); err == nil || !strings.Contains(err.Error(), "no valid header") {
		t.Errorf("commit of a damaged VHDX: %v", err)
	}
}

// TestCommitLocks: a parent or child in use, or a damaged parent, is
// refused, and nothing is written.
func TestCommitLocks(t *testing.T) {
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: 4 << 20, BlockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}
	d, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(bytes.Repeat([]byte{7}, 5000), 70000)
	if _, err := Commit(child, CommitOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("commit of a child open for writing: %v, want ErrLocked", err)
	}
	d.Close()
	files := func() [2][]byte {
		a, _ := os.ReadFile(base)
		b, _ := os.ReadFile(child)
		return [2][]byte{a, b}
	}
	before := files()
	pd, err := Open(base, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	pd.Close()
	// Another writer of the parent (a mount of a sibling would hold the
	// same lock, shared).
	w, err := Open(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Commit(child, CommitOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("commit into a parent in use: %v, want ErrLocked", err)
	}
	w.Close()
	// A damaged parent: two BAT entries naming the same block.
	b, _ := os.ReadFile(base)
	dam := filepath.Join(dir, "damaged.vhd")
	os.WriteFile(dam, b, 0o644)
	dd, err := Open(dam, nil)
	if err != nil {
		t.Fatal(err)
	}
	dd.WriteAt([]byte{1}, 0)
	dd.Close()
	b, _ = os.ReadFile(dam)
	copy(b[1536+4:1536+8], b[1536:1540]) // BAT entry 1 = entry 0
	os.WriteFile(dam, b, 0o644)
	os.WriteFile(base, b, 0o644) // the child's parent is now damaged (same unique id)
	before = files()
	if _, err := Commit(child, CommitOptions{}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("commit into a damaged parent: %v", err)
	}
	if after := files(); !bytes.Equal(after[0], before[0]) || !bytes.Equal(after[1], before[1]) {
		t.Error("a refused commit changed a file")
	}
}
