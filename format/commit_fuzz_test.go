package format

import (
	"bytes"
	"os"
	"testing"
)

// FuzzCommitCrash applies writes decoded from the input to the child of a
// differencing chain, then commits it, recording every write, truncation
// and sync of both files. For a cut after each of them, the chain must read
// as the model (the flat view before the commit) and check clean, and the
// parent must open for writing. Inputs are decoded as in FuzzWriteCrash.
func FuzzCommitCrash(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 7})
	f.Add([]byte{0x07, 0xFF, 0x00, 0x04, 0x01, 9, 0x00, 0x00, 0x00, 0x00, 0x01, 0, 0x02, 0x34, 0x56, 0x80, 0x00, 5})
	f.Add([]byte{0x07, 0xFF, 0xFE, 0x00, 0x10, 1, 0x03, 0x00, 0x00, 0x20, 0x00, 2, 0x03, 0x00, 0x01, 0x00, 0x02, 3})
	chain := fuzzWriteChains()[1]
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := chainFS(chain)
		size := chain[0].size
		d, err := Open("/img/layer0.vhd", fsys.opts())
		if err != nil {
			t.Fatal(err)
		}
		model := flat(chain)
		for n := 0; len(data) >= 6 && n < 6; n++ {
			off := (int64(data[0])<<16 | int64(data[1])<<8 | int64(data[2])) % size
			ln := min(1+(int64(data[3])<<8|int64(data[4]))%(80<<10), size-off)
			p := make([]byte, ln)
			if fill := data[5]; fill != 0 {
				for i := range p {
					p[i] = fill + byte(i*7) + byte(i>>9)
				}
			}
			data = data[6:]
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
		d.Close()
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
		for k := 0; k <= len(log); k++ {
			cut := replay(base, log, k)
			got, cd := readFlat(t, cut, "/img/layer0.vhd")
			if !bytes.Equal(got, model) {
				t.Fatalf("cut after %d of %d operations: the chain differs from the model at byte %d", k, len(log), firstDiff(got, model))
			}
			if probs := cd.Check(); len(probs) > 0 {
				t.Fatalf("cut after %d operations: check: %v", k, probs)
			}
			cd.Close()
			w, err := Open("/img/layer1.vhd", cut.opts())
			if err != nil {
				t.Fatalf("cut after %d operations: the parent does not open for writing: %v", k, err)
			}
			w.Close()
		}
		got, _ := readFlat(t, fsys, "/img/layer1.vhd")
		if !bytes.Equal(got, model) {
			t.Fatalf("the parent after the commit differs from the model at byte %d", firstDiff(got, model))
		}
	})
}
