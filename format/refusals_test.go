package format

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommitRemoveSymlink: --remove through a symbolic link to the child is
// refused with both files unchanged (removing the link would leave the
// image behind, removing the target would delete a file not named), for a
// VHD and a VHDX child; without --remove the commit goes through the link.
func TestCommitRemoveSymlink(t *testing.T) {
	for _, name := range []string{"vhd", "vhdx"} {
		t.Run(name, func(t *testing.T) {
			var parent, child string
			if name == "vhdx" {
				_, parent, child, _ = attackChain(t, 4<<20)
			} else {
				dir := t.TempDir()
				parent, child = filepath.Join(dir, "p.vhd"), filepath.Join(dir, "c.vhd")
				if err := Create(parent, CreateOptions{Type: TypeDynamic, Size: 4 << 20}); err != nil {
					t.Fatal(err)
				}
				if err := Create(child, CreateOptions{Parent: parent}); err != nil {
					t.Fatal(err)
				}
				d, err := Open(child, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.WriteAt([]byte("written into the child"), 1<<20); err != nil {
					t.Fatal(err)
				}
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
			}
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(child, link); err != nil {
				t.Fatal(err)
			}
			ps, cs := fileSum(t, parent), fileSum(t, child)
			_, err := Commit(link, CommitOptions{Remove: true})
			t.Logf("commit --remove: %v", err)
			if err == nil || !strings.Contains(err.Error(), "symbolic link") {
				t.Fatalf("got %v, want a refusal naming the symbolic link", err)
			}
			if fileSum(t, parent) != ps || fileSum(t, child) != cs {
				t.Fatal("a refused commit changed a file")
			}
			if _, err := os.Lstat(link); err != nil {
				t.Fatal("the link is gone:", err)
			}
			if _, err := Commit(link, CommitOptions{}); err != nil {
				t.Fatal("commit through the link:", err)
			}
			if fileSum(t, parent) == ps {
				t.Fatal("the commit through the link left the parent as it was")
			}
		})
	}
}

// TestCompactRefusesUnknownRegion: a dynamic VHDX with an optional region
// of an unknown kind (which the rewrite would not copy) is refused by
// compact with the file unchanged; it still opens and reads.
func TestCompactRefusesUnknownRegion(t *testing.T) {
	_, _, child, model := attackChain(t, 4<<20)
	in := vhdxInfo(t, child)
	fi, err := os.Stat(child)
	if err != nil {
		t.Fatal(err)
	}
	// A third entry in both region tables: an optional region of 1 MiB
	// past the end of the file, which is extended to hold it.
	at := (fi.Size() + 1<<20 - 1) &^ (1<<20 - 1)
	if err := os.Truncate(child, at+1<<20); err != nil {
		t.Fatal(err)
	}
	if len(in.Regions) != 2 {
		t.Fatalf("%d regions", len(in.Regions))
	}
	for _, ro := range []int64{192 << 10, 256 << 10} {
		e := make([]byte, 32)
		copy(e, "an unknown kind!")
		binary.LittleEndian.PutUint64(e[16:], uint64(at))
		binary.LittleEndian.PutUint32(e[24:], 1<<20)
		patchFile(t, child, ro+16+64, e)
		putU32 := make([]byte, 4)
		binary.LittleEndian.PutUint32(putU32, 3)
		patchFile(t, child, ro+8, putU32)
		fixRegionCRC(t, child, ro)
	}
	if n := len(vhdxInfo(t, child).Regions); n != 3 {
		t.Fatalf("the patched file lists %d regions, want 3", n)
	}
	before := fileSum(t, child)
	_, err = Compact(child, CompactOptions{})
	t.Logf("compact: %v", err)
	if err == nil || !strings.Contains(err.Error(), "optional region") {
		t.Fatalf("got %v, want a refusal naming the optional region", err)
	}
	if fileSum(t, child) != before {
		t.Fatal("a refused compact changed the file")
	}
	if got := readAll(t, child, int64(len(model))); !bytes.Equal(got, model) {
		t.Fatal("the child does not read as the model")
	}
}
