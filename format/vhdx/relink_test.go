package vhdx_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestCrashRelink records every write and sync of a read-write open and a
// Relink, and checks every cut: the child opens read-only and read-write,
// checks clean, reads as the model over its parent, and its locator is
// entirely the old one or entirely the new one (parent_linkage kept), the
// new one from the cut after the table entry's write on.
func TestCrashRelink(t *testing.T) {
	for _, lss := range []int{512, 4096} {
		t.Run(fmt.Sprint(lss), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(31, uint64(lss)))
			par := smallLayer(rng, false)
			par.lss, par.id, par.name = lss, 9, "p.vhdx"
			child := &tLayer{name: "top.vhdx", id: 3, size: 64 << 20, bs: 2 << 20, lss: lss, pss: 4096, diff: true,
				states: map[int64]int{4: tZero, 6: tFully}, bits: map[int64][]bool{}}
			link(rng, child, par)
			img := buildBytes(t, rng, child)
			chain := []*tLayer{child, par}
			below := modelBelow(chain[1:])

			locOf := func(l *vhdx.Layer) []vhdx.LocatorEntry {
				in, err := l.Info()
				if err != nil || in.ParentLocator == nil {
					t.Fatalf("info: %v", err)
				}
				return in.ParentLocator.Entries
			}
			f := newRWFile(img)
			ro0, err := vhdx.Open("/c/top.vhdx", f.clone(), vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			oldLoc := locOf(ro0)
			f.record = true
			l, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := l.Relink("/d/moved/p.vhdx")
			if err != nil {
				t.Fatal(err)
			}
			newLoc := locOf(l)
			l.Close()
			if res.RelativePath != `..\d\moved\p.vhdx` || res.AbsolutePath != `\d\moved\p.vhdx` {
				t.Fatalf("paths %q %q", res.RelativePath, res.AbsolutePath)
			}
			val := func(kv []vhdx.LocatorEntry, k string) string {
				for _, e := range kv {
					if e.Key == k {
						return e.Value
					}
				}
				return ""
			}
			if val(newLoc, "relative_path") != res.RelativePath || val(newLoc, "absolute_win32_path") != res.AbsolutePath ||
				val(newLoc, "parent_linkage") != val(oldLoc, "parent_linkage") || val(newLoc, "parent_linkage") == "" {
				t.Fatalf("new locator %v (old %v)", newLoc, oldLoc)
			}
			want := expect(chain, 0, child.size)
			sawNew := false
			for i := 0; i <= len(f.ops); i++ {
				g := newRWFile(img)
				for _, o := range f.ops[:i] {
					g.apply(o)
				}
				for _, rw := range []bool{false, true} {
					cl, err := vhdx.Open("/c/top.vhdx", g.clone(), vhdx.Options{ReadOnly: !rw})
					if err != nil {
						t.Fatalf("cut %d/%d (rw %v): open: %v", i, len(f.ops), rw, err)
					}
					if ps := cl.Check(); len(ps) > 0 {
						t.Fatalf("cut %d: Check: %v", i, ps)
					}
					loc := locOf(cl)
					switch {
					case equalKV(loc, oldLoc):
						if sawNew {
							t.Fatalf("cut %d: the old locator came back", i)
						}
					case equalKV(loc, newLoc):
						sawNew = true
					default:
						t.Fatalf("cut %d: locator %v is neither the old nor the new one", i, loc)
					}
					if got := readLayer(t, cl, below, 0, child.size); !bytes.Equal(got, want) {
						t.Fatalf("cut %d: the child does not read as the model", i)
					}
				}
			}
			if !sawNew {
				t.Fatal("no cut showed the new locator")
			}
		})
	}
}

func equalKV(a, b []vhdx.LocatorEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
