package format

import (
	"math/rand/v2"
	"os"
	"path/filepath"
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
