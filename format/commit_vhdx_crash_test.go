package format

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// punchOpFile is opFile that records a hole punch too (as the write of
// zeros it amounts to).
type punchOpFile struct{ opFile }

func (f punchOpFile) PunchHole(off, n int64) error {
	if p := punchAsWrite(off, n, int64(len(f.memFile.bytes()))); len(p) > 0 {
		*f.log = append(*f.log, fileOp{f.path, 'w', off, p})
	}
	return f.memFile.PunchHole(off, n)
}

// TestCommitVHDXCrashCuts commits an AVHDX (random writes and discards
// over a dynamic or a differencing parent, 512- and 4096-byte sectors)
// once, recording every write, punch, truncation and sync of the child and
// the parent in order; for a cut after every operation, the child must
// open as a chain (its parent matching parent_linkage or parent_linkage2)
// that reads as the model and checks clean, and both files must open for
// writing. The last cut has no parent_linkage2 left.
func TestCommitVHDXCrashCuts(t *testing.T) {
	for _, kind := range []string{"dynamic", "differencing"} {
		for _, lss := range []int{512, 4096} {
			t.Run(fmt.Sprint(kind, lss), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(61, uint64(lss)))
				dir := t.TempDir()
				const size = 6 << 20
				model := make([]byte, size)
				parent := filepath.Join(dir, "p.vhdx")
				names := []string{"p.vhdx", "c.avhdx"}
				if kind == "differencing" {
					base := filepath.Join(dir, "base.vhdx")
					if err := vhdx.Create(base, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20, SectorSize: lss}); err != nil {
						t.Fatal(err)
					}
					mutateModel(t, base, model, rng, 6)
					if err := vhdx.Create(parent, vhdx.CreateOptions{Parent: base}); err != nil {
						t.Fatal(err)
					}
					names = append(names, "base.vhdx")
				} else if err := vhdx.Create(parent, vhdx.CreateOptions{Size: size, BlockSize: 1 << 20, SectorSize: lss}); err != nil {
					t.Fatal(err)
				}
				mutateModel(t, parent, model, rng, 6)
				child := filepath.Join(dir, "c.avhdx")
				if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
					t.Fatal(err)
				}
				mutateModel(t, child, model, rng, 12)
				base := map[string][]byte{}
				fsys := memFS{}
				for _, n := range names {
					b, err := os.ReadFile(filepath.Join(dir, n))
					if err != nil {
						t.Fatal(err)
					}
					base["/img/"+n] = b
					fsys["/img/"+n] = newMemFile("/img/"+n, append([]byte(nil), b...))
				}
				var log []fileOp
				open := func(path string, write bool) (File, error) {
					f, ok := fsys[path]
					if !ok {
						return nil, os.ErrNotExist
					}
					return punchOpFile{opFile{f, path, &log}}, nil
				}
				if _, err := Commit("/img/c.avhdx", memCommitOptions(fsys, open)); err != nil {
					t.Fatal(err)
				}
				for k := 0; k <= len(log); k++ {
					if k > 0 {
						if p := log[k-1].path; p != "/img/c.avhdx" && p != "/img/p.vhdx" {
							t.Fatalf("operation %d touches %s", k, p)
						}
					}
					cut := replay(base, log, k)
					got, cd := readFlat(t, cut, "/img/c.avhdx")
					if !bytes.Equal(got, model) {
						t.Fatalf("cut after %d of %d operations: the chain differs from the model at byte %d", k, len(log), firstDiff(got, model))
					}
					if probs := cd.Check(); len(probs) > 0 {
						t.Fatalf("cut after %d of %d operations: check: %v", k, len(log), probs)
					}
					if k == len(log) {
						if w := cd.Warnings(); len(w) > 0 {
							t.Errorf("after the commit: warnings %v", w)
						}
					}
					cd.Close()
					for _, p := range []string{"/img/c.avhdx", "/img/p.vhdx"} {
						w, err := Open(p, cut.opts())
						if err != nil {
							t.Fatalf("cut after %d operations: %s does not open for writing: %v", k, p, err)
						}
						w.Close()
					}
				}
				got, _ := readFlat(t, fsys, "/img/p.vhdx")
				if !bytes.Equal(got, model) {
					t.Fatal("the parent does not read as the model after the commit")
				}
				// A user commits again after a crash. From every cut the
				// second commit finishes with the chain reading as the
				// model; from the first cut where the parent's new header
				// is durable (it matches the child only through
				// parent_linkage2), every cut of the second commit opens.
				every := -1
				for k, op := range log {
					if op.path == "/img/p.vhdx" && op.kind == 's' {
						every = k + 1
						break
					}
				}
				if every < 0 {
					t.Fatal("the commit never synced the parent")
				}
				for k := 0; k <= len(log); k++ {
					recommit(t, replay(base, log, k), model, k == every)
				}
				t.Logf("%d operations, every cut checked", len(log))
			})
		}
	}
}

// recommit runs Commit again on the files of a cut, recording its
// operations, and fails unless the chain then reads as the model without
// warnings; with every, each cut of that second commit must open as a
// chain that reads as the model too.
func recommit(t *testing.T, files memFS, model []byte, every bool) {
	t.Helper()
	base := map[string][]byte{}
	fsys := memFS{}
	for p, f := range files {
		b := f.bytes()
		base[p] = append([]byte(nil), b...)
		fsys[p] = newMemFile(p, append([]byte(nil), b...))
	}
	var log []fileOp
	open := func(path string, write bool) (File, error) {
		f, ok := fsys[path]
		if !ok {
			return nil, os.ErrNotExist
		}
		return punchOpFile{opFile{f, path, &log}}, nil
	}
	if _, err := Commit("/img/c.avhdx", memCommitOptions(fsys, open)); err != nil {
		t.Fatalf("committing again after a cut: %v", err)
	}
	from := len(log)
	if every {
		from = 0
	}
	for k := from; k <= len(log); k++ {
		got, cd := readFlat(t, replay(base, log, k), "/img/c.avhdx")
		if !bytes.Equal(got, model) {
			t.Fatalf("second commit, cut after %d of %d operations: the chain differs from the model at byte %d", k, len(log), firstDiff(got, model))
		}
		if k == len(log) {
			if w := cd.Warnings(); len(w) > 0 {
				t.Errorf("after committing again: warnings %v", w)
			}
		}
		cd.Close()
	}
}
