package vhdx_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// TestCompactInterrupted stops the rewrite of a dynamic and a differencing
// file before each of its steps (as a failing writer or a crash would),
// and with a verification that refuses: every time the image is byte for
// byte as it was, still checks clean, and no temporary file is left. An
// image with two hard links is refused the same way, and a layer opened
// read-only is refused.
func TestCompactInterrupted(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	parent := filepath.Join(dir, "p.vhdx")
	if err := vhdx.Create(parent, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "c.vhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{parent, child} {
		l, f := openRW(t, path)
		for _, b := range []int64{0, 2, 3, 6} {
			p := make([]byte, 1<<20)
			if b != 3 {
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
			}
			if _, err := l.WriteAt(p[:700*512], b<<20+4096, zeroReader{}); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		f.Close()
	}
	sum := func(path string) [32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	noBelow := func(off, n int64) bool { return false }
	errStop := errors.New("stopped")
	for _, path := range []string{parent, child} {
		before := sum(path)
		try := func(what string, verify func(string) error, wantErr string) {
			t.Helper()
			l, f := openRW(t, path)
			_, err := l.Compact(noBelow, verify, nil)
			l.Close()
			f.Close()
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("%s: %s: err = %v, want %q", path, what, err, wantErr)
			}
			if sum(path) != before {
				t.Fatalf("%s: %s: the image changed", path, what)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.Contains(e.Name(), "compact") {
					t.Fatalf("%s: %s: temporary file %s left", path, what, e.Name())
				}
			}
			l, f = openRW(t, path)
			mustClean(t, l, what)
			l.Close()
			f.Close()
		}
		accept := func(string) error { return nil }
		for _, step := range []string{"header", "metadata", "blocks", "size", "sync", "verify", "mode", "rename"} {
			vhdx.SetCompactStep(func(s string) error {
				if s == step {
					return errStop
				}
				return nil
			})
			try("stopped before "+step, accept, "stopped")
		}
		vhdx.SetCompactStep(nil)
		seen := false
		try("verification refused", func(tmp string) error {
			fi, err := os.Stat(tmp)
			seen = err == nil && fi.Size() > 0
			return errors.New("refused")
		}, "refused")
		if !seen {
			t.Fatal("verify was not given the temporary file")
		}
		link := path + ".link"
		if err := os.Link(path, link); err != nil {
			t.Fatal(err)
		}
		try("two hard links", accept, "hard links")
		os.Remove(link)
	}
	f, err := os.Open(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ro, err := vhdx.Open(parent, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Compact(noBelow, func(string) error { return nil }, nil); !errors.Is(err, vhdx.ErrReadOnly) {
		t.Fatalf("read-only layer: err = %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

// infoOf opens path read-only and returns its Info.
func infoOf(t *testing.T, path string) *vhdx.Info {
	t.Helper()
	f := mustOpen(t, path)
	defer f.Close()
	l, err := vhdx.Open(path, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	in, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// itemBytes returns the bytes of each metadata item, keyed by id and flags.
func itemBytes(t *testing.T, in *vhdx.Info) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(in.Path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, it := range in.Metadata {
		m[fmt.Sprintf("%s/%v/%v/%v", it.ID, it.IsUser, it.IsVirtualDisk, it.IsRequired)] = b[it.Off : it.Off+it.Length]
	}
	return m
}

// TestCompactBuilt compacts builder images (every block state: FULLY and
// PARTIALLY_PRESENT with all kinds of sector bitmaps, ZERO, UNDEFINED,
// UNMAPPED, NOT_PRESENT; blocks on both sides of chunk boundaries; user
// metadata items; a pending log, which the read-write open replays), a
// child first (over its parent, belowHasData from the builder's model) and
// then the parent: the verification and the results read as the builder's
// model of the chain, check clean, keep their metadata items byte for byte
// and their DataWriteGuid (the child's parent_linkage still names the
// compacted parent), get a new FileWriteGuid, have no log, and are no
// larger. A child's block that reads zeros over the parent's data keeps
// reading zeros, and one whose present sectors are zeros over nothing is
// dropped.
func TestCompactBuilt(t *testing.T) {
	for i, c := range []struct {
		lss int
		bs  int64
	}{{512, 1 << 20}, {4096, 1 << 20}, {512, 2 << 20}, {4096, 4 << 20}} {
		t.Run(fmt.Sprint(c.lss, "-", c.bs>>20, "M"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 99))
			dir := t.TempDir()
			ratio := int64(1<<23) * int64(c.lss) / c.bs
			size := (ratio+3)*c.bs + int64(c.lss) // past a chunk boundary, a partial last block
			par := randomLayer(rng, "p.vhdx", 1, size, c.bs, c.lss, false)
			par.defState = tNotPresent
			ch := randomLayer(rng, "c.vhdx", 2, size, c.bs, c.lss, true)
			ch.userItem, par.userItem = true, i%2 == 0
			ch.states[0], par.states[0] = tFully, tFully
			ch.pendingLog = i%2 == 1
			link(rng, ch, par)
			ch.locator = []tKV{{"parent_linkage", tGUIDText(par.dataWrite)}, {"relative_path", `.\p.vhdx`}}
			if err := writeChain(rng, dir, []*tLayer{ch, par}); err != nil {
				t.Fatal(err)
			}
			chain := []*tLayer{ch, par}
			// The blocks compared: every block either layer stores or
			// marks, the first and last, and some others.
			blocks := map[int64]bool{0: true, size / c.bs: true}
			for _, l := range chain {
				for b := range l.states {
					blocks[b] = true
				}
			}
			for k := 0; k < 8; k++ {
				blocks[rng.Int64N(size/c.bs+1)] = true
			}
			same := func(what string, read func(off, n int64) []byte, chain []*tLayer) {
				t.Helper()
				for b := range blocks {
					off := b * c.bs
					n := min(c.bs, size-off)
					if got, want := read(off, n), expect(chain, off, n); !bytes.Equal(got, want) {
						t.Fatalf("%s: block %d does not read as the model (first difference at %d)", what, b, off+firstDiff(got, want))
					}
				}
			}
			below := func(off, n int64) bool {
				for b := off / c.bs; b*c.bs < off+n; b++ {
					if s := par.state(b); s == tFully || s == tPartial {
						return true
					}
				}
				return false
			}
			compact := func(path string, belowHasData func(off, n int64) bool, under io.ReaderAt, model []*tLayer) {
				t.Helper()
				in0 := infoOf(t, path)
				items0 := itemBytes(t, in0)
				fi0, _ := os.Stat(path)
				check := func(p string) {
					t.Helper()
					f := mustOpen(t, p)
					defer f.Close()
					l, err := vhdx.Open(p, f, vhdx.Options{ReadOnly: true})
					if err != nil {
						t.Fatal(err)
					}
					mustClean(t, l, p)
					same(p, func(off, n int64) []byte { return readLayer(t, l, under, off, n) }, model)
				}
				l, f := openRW(t, path)
				_, err := l.Compact(belowHasData, func(tmp string) error { check(tmp); return nil }, nil)
				l.Close()
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				check(path)
				in1 := infoOf(t, path)
				cur := func(in *vhdx.Info) *vhdx.Header {
					for _, h := range in.Headers {
						if h.Current {
							return h.Header
						}
					}
					t.Fatal("no current header")
					return nil
				}
				h0, h1 := cur(in0), cur(in1)
				if h0.DataWriteGUID != h1.DataWriteGUID || h0.FileWriteGUID == h1.FileWriteGUID {
					t.Errorf("%s: DataWriteGuid %s → %s, FileWriteGuid %s → %s", path, h0.DataWriteGUID, h1.DataWriteGUID, h0.FileWriteGUID, h1.FileWriteGUID)
				}
				if !h1.LogGUID.IsZero() || in1.Log.State != "empty" {
					t.Errorf("%s: log %s after compaction", path, in1.Log.State)
				}
				items1 := itemBytes(t, in1)
				if len(items1) != len(items0) {
					t.Errorf("%s: %d metadata items, was %d", path, len(items1), len(items0))
				}
				for k, v := range items0 {
					if !bytes.Equal(items1[k], v) {
						t.Errorf("%s: metadata item %s changed", path, k)
					}
				}
				if fi1, _ := os.Stat(path); fi1.Size() > fi0.Size() {
					t.Errorf("%s grew: %d → %d bytes", path, fi0.Size(), fi1.Size())
				}
			}
			parentReader := func() io.ReaderAt {
				f := mustOpen(t, filepath.Join(dir, "p.vhdx"))
				t.Cleanup(func() { f.Close() })
				l, err := vhdx.Open(filepath.Join(dir, "p.vhdx"), f, vhdx.Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				return readerFunc(func(p []byte, off int64) (int, error) {
					copy(p, readLayer(t, l, nil, off, int64(len(p))))
					return len(p), nil
				})
			}
			compact(filepath.Join(dir, "c.vhdx"), below, modelBelow(chain[1:]), chain)
			compact(filepath.Join(dir, "p.vhdx"), func(int64, int64) bool { return false }, nil, chain[1:])
			// The compacted child over the compacted parent.
			f := mustOpen(t, filepath.Join(dir, "c.vhdx"))
			defer f.Close()
			cl, err := vhdx.Open(filepath.Join(dir, "c.vhdx"), f, vhdx.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			pr := parentReader()
			same("the compacted chain", func(off, n int64) []byte { return readLayer(t, cl, pr, off, n) }, chain)
			ci, pi := infoOf(t, filepath.Join(dir, "c.vhdx")), infoOf(t, filepath.Join(dir, "p.vhdx"))
			var lk string
			for _, e := range ci.ParentLocator.Entries {
				if e.Key == "parent_linkage" {
					lk = e.Value
				}
			}
			for _, h := range pi.Headers {
				if h.Current && !strings.EqualFold(strings.Trim(lk, "{}"), h.Header.DataWriteGUID.String()) {
					t.Errorf("the child's parent_linkage %s is not the compacted parent's DataWriteGuid %s", lk, h.Header.DataWriteGUID)
				}
			}
		})
	}
}

// TestCompactKilled kills (SIGKILL) a process compacting a dynamic file at
// each step of the rewrite, the rename included: before the rename the
// image is byte for byte as it was (a stray temporary file may stay); a
// kill just before the rename leaves the old image, and after a
// successful run the image reads as before.
func TestCompactKilled(t *testing.T) {
	if img := os.Getenv("VHDX_COMPACT_KILL_IMAGE"); img != "" {
		step := os.Getenv("VHDX_COMPACT_KILL_AT")
		vhdx.SetCompactStep(func(s string) error {
			if s == step {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // wait for the signal
			}
			return nil
		})
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		l, err := vhdx.Open(img, f, vhdx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Compact(func(int64, int64) bool { return false }, func(string) error { return nil }, nil); err != nil {
			t.Fatal(err)
		}
		return
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vhdx")
	if err := vhdx.Create(img, vhdx.CreateOptions{Size: 8 << 20, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	l, f := openRW(t, img)
	want := make([]byte, 8<<20)
	for _, b := range []int64{1, 4, 5, 4} { // block 4: data, then zeros
		p := make([]byte, 1<<20)
		if want[4<<20] == 0 || b != 4 {
			for i := range p {
				p[i] = byte(rng.Uint32() | 1)
			}
		}
		if _, err := l.WriteAt(p, b<<20, zeroReader{}); err != nil {
			t.Fatal(err)
		}
		copy(want[b<<20:], p)
	}
	l.Close()
	f.Close()
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"header", "metadata", "blocks", "size", "sync", "verify", "mode", "rename", ""} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCompactKilled$")
		cmd.Env = append(os.Environ(), "VHDX_COMPACT_KILL_IMAGE="+img, "VHDX_COMPACT_KILL_AT="+step)
		out, err := cmd.CombinedOutput()
		if step != "" {
			if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("kill at %s: %v\n%s", step, err, out)
			}
			if now, _ := os.ReadFile(img); !bytes.Equal(now, orig) {
				t.Fatalf("killed before %s: the image changed", step)
			}
		} else if err != nil {
			t.Fatalf("compact: %v\n%s", err, out)
		}
		l, f := openRW(t, img)
		mustClean(t, l, "after a kill before "+step)
		if got := readLayer(t, l, nil, 0, 8<<20); !bytes.Equal(got, want) {
			t.Fatalf("after a kill before %q the image does not read as written", step)
		}
		l.Close()
		f.Close()
	}
	if now, _ := os.ReadFile(img); bytes.Equal(now, orig) || len(now) >= len(orig) {
		t.Fatalf("the complete run did not compact the image (%d → %d bytes)", len(orig), len(now))
	}
}
