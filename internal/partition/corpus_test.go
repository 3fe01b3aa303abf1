package partition

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestCorpus reads the tables of corpus disks through package format and
// compares them with sfdisk's listing of the same disk written out flat.
func TestCorpus(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	for _, c := range []struct {
		rel    string
		scheme string
		parts  int
	}{
		{"real/node-vhd/dynamic.vhd.gz", GPT, 4},
		{"real/node-vhd/fixed.vhd.gz", MBR, 1},
	} {
		t.Run(c.rel, func(t *testing.T) {
			d, err := format.Open(testenv.Unpack(t, corpus, c.rel), &format.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			tab, err := Read(d, d.Size())
			if err != nil {
				t.Fatal(err)
			}
			raw := filepath.Join(t.TempDir(), "disk.raw")
			f, err := os.Create(raw)
			if err != nil {
				t.Fatal(err)
			}
			err = testenv.WriteSparse(f, io.NewSectionReader(d, 0, d.Size()))
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			compareSfdisk(t, tab, sfdiskJSON(t, raw))
			if tab.Scheme != c.scheme || len(tab.Partitions) != c.parts || len(tab.Notes) != 0 {
				t.Errorf("got %s with %d partitions, notes %q; want %s with %d", tab.Scheme, len(tab.Partitions), tab.Notes, c.scheme, c.parts)
			}
			for _, p := range tab.Partitions {
				t.Logf("p%d %s %q start %d size %d name %q", p.Number, p.Type, p.TypeName, p.Start, p.Size, p.Name)
			}
		})
	}
}
