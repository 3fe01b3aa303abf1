package format

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// FuzzOpen opens arbitrary bytes as an image (and as the parent of a
// differencing child) and reads from it: it must never panic or hang.
func FuzzOpen(f *testing.F) {
	rng := rand.New(rand.NewPCG(21, 21))
	for _, chain := range testChains(rng) {
		for _, l := range chain {
			if img := l.image(); len(img) <= 1<<20 {
				f.Add(img)
			}
		}
	}
	// Small real images, when the corpus is there (it is in CI).
	if dir := testenv.FindCorpus(); dir != "" {
		filepath.Walk(filepath.Join(dir, "real"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && strings.HasSuffix(p, ".vhd") && fi.Size() <= 1<<20 {
				if b, err := os.ReadFile(p); err == nil {
					f.Add(b)
				}
			}
			return nil
		})
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := memFS{"/x/a.vhd": newMemFile("/x/a.vhd", data), "/x/p.vhd": newMemFile("/x/p.vhd", data)}
		d, err := Open("/x/a.vhd", fsys.opts())
		if err != nil {
			return
		}
		defer d.Close()
		d.Layers()
		buf := make([]byte, 64<<10)
		for _, off := range []int64{0, d.Size() / 2, d.Size() - 1, d.Size() - int64(len(buf))} {
			if off >= 0 {
				d.ReadAt(buf, off)
			}
		}
		for off, n := int64(0), 0; off < d.Size() && n < 1000; n++ {
			_, off = d.Extent(off)
		}
	})
}
