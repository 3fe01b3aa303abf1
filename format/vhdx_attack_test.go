package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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

// vxInfo returns the vhdx Info of the file at path.
func vxInfo(t *testing.T, path string) *vhdx.Info {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
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
	in := vxInfo(t, child)
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
	if ps := vxInfo(t, child); ps.ParentLocator == nil {
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
