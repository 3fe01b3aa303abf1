package format

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestParentDiscovery opens a child whose parent is named in one way only,
// and checks how it was found.
func TestParentDiscovery(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for _, c := range []struct {
		name       string
		parentPath string
		setup      func(l *tLayer)
		override   string
		wantVia    string
	}{
		{"W2ru", "/img/p.vhd", func(l *tLayer) { l.w2ru = `.\p.vhd` }, "", "W2ru"},
		{"W2ru in a subdirectory", "/img/base/p.vhd", func(l *tLayer) { l.w2ru = `.\base\p.vhd` }, "", "W2ru"},
		{"W2ru beats a wrong header name", "/img/p.vhd", func(l *tLayer) { l.w2ru = `.\p.vhd`; l.parentName = "other.vhd" }, "", "W2ru"},
		{"W2ku absolute POSIX", "/data/p.vhd", func(l *tLayer) { l.locators = []tLoc{{"W2ku", utf16le(`\data\p.vhd`)}} }, "", "W2ku"},
		{"W2ku drive letter falls back to basename", "/img/p.vhd", func(l *tLayer) { l.locators = []tLoc{{"W2ku", utf16le(`C:\VMs\p.vhd`)}} }, "", "W2ku (basename)"},
		{"MacX file URL", "/data/my disk.vhd", func(l *tLayer) { l.locators = []tLoc{{"MacX", []byte("file://localhost/data/my%20disk.vhd")}} }, "", "MacX"},
		{"MacX relative (blktap)", "/img/p.vhd", func(l *tLayer) { l.locators = []tLoc{{"MacX", []byte("file://./p.vhd")}} }, "", "MacX"},
		{"header name relative", "/img/p.vhd", func(l *tLayer) { l.parentName = "p.vhd" }, "", "header name"},
		{"header name POSIX relative", "/base/p.vhd", func(l *tLayer) { l.parentName = "../base/p.vhd" }, "", "header name"},
		{"header name Windows absolute", "/img/p.vhd", func(l *tLayer) { l.parentName = `C:\x\p.vhd` }, "", "header name (basename)"},
		{"header name UTF-16LE", "/img/p.vhd", func(l *tLayer) { l.parentName = "p.vhd"; l.nameLE = true }, "", "header name (UTF-16LE)"},
		{"override", "/else/q.vhd", func(l *tLayer) { l.w2ru = `.\p.vhd` }, "/else/q.vhd", "--parent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent := randomLayer(rng, 3, 2<<20, 1<<20, 1)
			child := randomLayer(rng, 4, 2<<20, 1<<20, 2)
			child.parentUUID = parent.uuid
			c.setup(child)
			fsys := memFS{
				"/img/child.vhd": newMemFile("/img/child.vhd", child.image()),
				c.parentPath:     newMemFile(c.parentPath, parent.image()),
			}
			o := fsys.opts()
			o.Parent = c.override
			d, err := Open("/img/child.vhd", o)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			li := d.Layers()
			if len(li) != 2 || li[1].Path != c.parentPath || li[1].FoundVia != c.wantVia {
				t.Fatalf("parent %s found via %q; want %s via %q", li[len(li)-1].Path, li[len(li)-1].FoundVia, c.parentPath, c.wantVia)
			}
		})
	}
}

// TestParentErrors: every path tried is listed with its reason.
func TestParentErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	parent := randomLayer(rng, 3, 2<<20, 1<<20, 1)
	child := randomLayer(rng, 4, 2<<20, 1<<20, 2)
	child.parentUUID = [16]byte{9, 9, 9}
	child.w2ru = `.\p.vhd`
	child.parentName = `C:\VMs\q.vhd`
	child.locators = []tLoc{{"W2ku", utf16le(`C:\VMs\p.vhd`)}}
	fsys := memFS{
		"/img/child.vhd": newMemFile("/img/child.vhd", child.image()),
		"/img/p.vhd":     newMemFile("/img/p.vhd", parent.image()),
	}
	_, err := Open("/img/child.vhd", fsys.opts())
	var pe *ParentError
	if !errors.Is(err, ErrParentMismatch) || !errors.As(err, &pe) {
		t.Fatalf("got %v, want a ParentError with ErrParentMismatch", err)
	}
	msg := err.Error()
	for _, want := range []string{"/img/child.vhd", `W2ru ".\p.vhd" -> /img/p.vhd: unique id`, `W2ku (basename) "C:\VMs\p.vhd" -> /img/p.vhd: same path as above`, `header name (basename) "C:\VMs\q.vhd" -> /img/q.vhd: no such file`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	delete(fsys, "/img/p.vhd")
	if _, err := Open("/img/child.vhd", fsys.opts()); !errors.Is(err, ErrParentNotFound) {
		t.Errorf("without the parent: %v, want ErrParentNotFound", err)
	}
}

// TestChainLimits: a cycle and a chain deeper than MaxChainDepth are refused.
func TestChainLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	// a.vhd's parent is b.vhd whose parent is a.vhd.
	a := randomLayer(rng, 4, 1<<20, 1<<20, 1)
	b := randomLayer(rng, 4, 1<<20, 1<<20, 2)
	a.parentUUID, a.w2ru = b.uuid, `.\b.vhd`
	b.parentUUID, b.w2ru = a.uuid, `.\a.vhd`
	fsys := memFS{"/img/a.vhd": newMemFile("/img/a.vhd", a.image()), "/img/b.vhd": newMemFile("/img/b.vhd", b.image())}
	if _, err := Open("/img/a.vhd", fsys.opts()); !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v, want ErrChain … cycle", err)
	}

	fsys = memFS{}
	n := MaxChainDepth + 2
	for i := range n {
		l := &tLayer{typ: 4, size: 1 << 20, blockSize: 1 << 20, blocks: map[int64]*tBlock{}, batPad: 0xFF}
		if i == n-1 {
			l.typ = 3
		}
		l.uuid = [16]byte{byte(i), byte(i >> 8), 7}
		l.parentUUID = [16]byte{byte(i + 1), byte((i + 1) >> 8), 7}
		l.w2ru = fmt.Sprintf(`.\l%d.vhd`, i+1)
		p := fmt.Sprintf("/img/l%d.vhd", i)
		fsys[p] = newMemFile(p, l.image())
	}
	if _, err := Open("/img/l0.vhd", fsys.opts()); !errors.Is(err, ErrChain) {
		t.Errorf("depth %d: %v, want ErrChain", n, err)
	}
	if d, err := Open("/img/l2.vhd", fsys.opts()); err != nil {
		t.Errorf("depth %d: %v", n-3, err)
	} else {
		d.Close()
	}
}

// TestParentNotRegular: a parent locator that leads to a FIFO, a device or
// a directory is refused at once with what it is, never waited on (a FIFO
// opened for reading blocks until a writer comes) and never read.
func TestParentNotRegular(t *testing.T) {
	dir := t.TempDir()
	parent, child := filepath.Join(dir, "p.vhd"), filepath.Join(dir, "c.vhd")
	if err := Create(parent, CreateOptions{Type: TypeDynamic, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		make func() error
		want string
	}{
		{"fifo", func() error { return syscall.Mkfifo(parent, 0o644) }, "is a FIFO"},
		{"device", func() error { return os.Symlink("/dev/zero", parent) }, "is a character device"},
		{"directory", func() error { return os.Mkdir(parent, 0o755) }, "is a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.RemoveAll(parent); err != nil {
				t.Fatal(err)
			}
			if err := c.make(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				d, err := Open(child, &Options{ReadOnly: true})
				if err == nil {
					d.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrParentNotFound) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v; want ErrParentNotFound saying %q", err, c.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Open is still waiting on the parent after 20 s")
			}
		})
	}
}

// TestMixedChainRefused: a VHD child whose parent path holds a VHDX image
// (qemu's) is refused as a mismatch that says why.
func TestMixedChainRefused(t *testing.T) {
	vhdxPath := testenv.Unpack(t, testenv.CorpusDir(t), "generated/vhdx-qemu/dyn-1M-zero.vhdx.gz")
	dir := t.TempDir()
	parent, child := filepath.Join(dir, "p.vhd"), filepath.Join(dir, "c.vhd")
	if err := Create(parent, CreateOptions{Type: TypeDynamic, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(vhdxPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(parent, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(child, &Options{ReadOnly: true})
	if !errors.Is(err, ErrParentMismatch) || !strings.Contains(err.Error(), "a VHD's parent must be a VHD") {
		t.Fatalf("got %v; want a mismatch: a VHD's parent must be a VHD", err)
	}
}
