package vhdx_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestAttackPendingLog: resize and relink of a file with a pending log
// replay it first; the file then reads as the builder's model.
func TestAttackPendingLog(t *testing.T) {
	for _, diff := range []bool{false, true} {
		t.Run(fmt.Sprint("diff=", diff), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(71, 3))
			top := smallLayer(rng, diff)
			top.pendingLog = true
			chain := []*tLayer{top}
			if diff {
				par := smallLayer(rng, false)
				par.name, par.id = "p.vhdx", 9
				link(rng, top, par)
				chain = append(chain, par)
			}
			img := buildBytes(t, rng, top)
			below := modelBelow(chain[1:])
			want := expect(chain, 0, top.size)
			open := func(f *rwFile, ro bool) *vhdx.Layer {
				l, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{ReadOnly: ro})
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			// Resize.
			f := newRWFile(img)
			l := open(f, false)
			if _, err := l.Resize(top.size+(32<<20), false, top.size); err != nil {
				t.Fatal(err)
			}
			l.Close()
			r := open(f.clone(), true)
			if r.LogReplayed() {
				t.Fatal("the log is still pending after the resize")
			}
			if ps := r.Check(); len(ps) > 0 {
				t.Fatal(ps)
			}
			got := readLayer(t, r, below, 0, top.size+(32<<20))
			if !bytes.Equal(got[:top.size], want) || !bytes.Equal(got[top.size:], make([]byte, 32<<20)) {
				t.Fatal("the resized file does not read as the model")
			}
			if !diff {
				return
			}
			// Relink.
			f = newRWFile(img)
			l = open(f, false)
			if _, err := l.Relink("/elsewhere/p.vhdx"); err != nil {
				t.Fatal(err)
			}
			l.Close()
			r = open(f.clone(), true)
			if r.LogReplayed() {
				t.Fatal("the log is still pending after the relink")
			}
			if ps := r.Check(); len(ps) > 0 {
				t.Fatal(ps)
			}
			if got := readLayer(t, r, below, 0, top.size); !bytes.Equal(got, want) {
				t.Fatal("the relinked file does not read as the model")
			}
		})
	}
}

// TestAttackRewriteLocatorRefusals: a locator entry the format cannot hold
// (an empty key or value, which a reader refuses; one longer than the
// 16-bit byte length; a path that is not UTF-8) is refused with nothing
// written.
func TestAttackRewriteLocatorRefusals(t *testing.T) {
	rng := rand.New(rand.NewPCG(72, 1))
	par := smallLayer(rng, false)
	par.name, par.id = "p.vhdx", 9
	child := smallLayer(rng, true)
	link(rng, child, par)
	img := buildBytes(t, rng, child)
	f := newRWFile(img)
	l, err := vhdx.Open("/c/top.vhdx", f, vhdx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f.record = true
	loc := l.Locator()
	long := strings.Repeat("x", 40000)
	for name, kv := range map[string][]vhdx.LocatorEntry{
		"empty value": append(append([]vhdx.LocatorEntry(nil), loc...), vhdx.LocatorEntry{Key: "k", Value: ""}),
		"empty key":   append(append([]vhdx.LocatorEntry(nil), loc...), vhdx.LocatorEntry{Key: "", Value: "v"}),
		"long value":  append(append([]vhdx.LocatorEntry(nil), loc...), vhdx.LocatorEntry{Key: "k", Value: long}),
	} {
		if _, err := l.RewriteLocator(kv); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := l.Relink("/d/\xff/p.vhdx"); err == nil {
		t.Error("a path that is not UTF-8: accepted")
	}
	for _, o := range f.ops {
		if o.kind != 's' {
			t.Fatalf("a refused locator rewrite changed the file (%c at 0x%x)", o.kind, o.off)
		}
	}
}
