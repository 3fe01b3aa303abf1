//go:build linux

package integration

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

// utf16le encodes s as UTF-16LE, as VHDX parent locator values are stored.
func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// metadataRegion returns the file offset and length of a VHDX file's
// metadata region, read here from the spec's layout: region table 1 at
// 192 KiB, "regi", entry count at byte 8, 32-byte entries from byte 16
// (GUID, file offset uint64, length uint32, flags).
func metadataRegion(t *testing.T, b []byte) (int, int) {
	t.Helper()
	// 8B7CA206-4790-4B9A-B8FE-575F050F886E in its on-disk byte order.
	meta := []byte{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e}
	rt := b[192<<10:]
	if string(rt[:4]) != "regi" {
		t.Fatal("no region table at 192 KiB")
	}
	for i := range min(int(binary.LittleEndian.Uint32(rt[8:])), 2047) {
		e := rt[16+32*i:]
		if bytes.Equal(e[:16], meta) {
			off, n := int(binary.LittleEndian.Uint64(e[16:])), int(binary.LittleEndian.Uint32(e[24:]))
			if off < 0 || n <= 0 || off+n > len(b) {
				t.Fatalf("metadata region [%d, +%d) outside the file", off, n)
			}
			return off, n
		}
	}
	t.Fatal("no metadata region")
	return 0, 0
}

// TestMountShowsVHDXWarnings: a VHDX child whose parent matches only its
// parent_linkage2 (made from the corpus's real Hyper-V child over its
// stand-in parent by rewriting, in the metadata region, parent_linkage to
// another GUID and the all-zero parent_linkage2 to the parent's
// DataWriteGuid) mounts read-only and vhdmount says so: one line on stderr
// naming the child file, in the foreground (and in the --log file) and
// detached. The unchanged child mounts without a warning.
func TestMountShowsVHDXWarnings(t *testing.T) {
	requireMount(t)
	orig := corpusImage(t, "generated/dissect-avhdx-synthparent/differencing.avhdx.gz")
	const linkage = "{ff34003b-11ed-4cf8-a166-b2be05e20b80}" // the parent's DataWriteGuid (corpus README)
	const zero = "{00000000-0000-0000-0000-000000000000}"
	b, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	off, n := metadataRegion(t, b)
	md := b[off : off+n]
	if bytes.Count(md, utf16le(linkage)) != 1 || bytes.Count(md, utf16le(zero)) != 1 {
		t.Fatalf("the metadata region does not hold parent_linkage %s and parent_linkage2 %s once each", linkage, zero)
	}
	copy(md[bytes.Index(md, utf16le(linkage)):], utf16le("{ff34003b-11ed-4cf8-a166-b2be05e20b81}"))
	copy(md[bytes.Index(md, utf16le(zero)):], utf16le(linkage))
	// Beside the parent, which is found by relative_path.
	child := filepath.Join(filepath.Dir(orig), "linkage2-only.avhdx")
	if err := os.WriteFile(child, b, 0o444); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(child)

	warned := func(out string) int {
		k := 0
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "vhdmount: warning: "+child+": ") && strings.Contains(l, "parent_linkage2") {
				k++
			}
		}
		return k
	}
	logFile := filepath.Join(tempDir(t), "vhdmount.log")
	m := mountImage(t, child, "--ro", "--log", logFile)
	if _, err := os.Stat(m.file); err != nil {
		t.Fatal(err)
	}
	m.unmount(t)
	if warned(m.out.String()) != 1 {
		t.Errorf("foreground output %q: want one warning line naming %s and parent_linkage2", m.out, child)
	}
	if lb, _ := os.ReadFile(logFile); !strings.Contains(string(lb), "vhdmount[") || !strings.Contains(string(lb), "warning: "+child+": ") {
		t.Errorf("--log file %q: no warning naming %s", lb, child)
	}
	dir := tempDir(t)
	out, code := run(t, bin("vhdmount"), "--ro", child, dir)
	if code != 0 || warned(out) != 1 || strings.Count(out, "\n") != 1 {
		t.Errorf("detached: exit %d, output %q; want 0 and the one warning line", code, out)
	}
	if code == 0 {
		adoptDaemon(t, dir).unmount(t)
	}

	m = mountImage(t, orig, "--ro")
	m.unmount(t)
	if strings.Contains(m.out.String(), "warning") {
		t.Errorf("the unchanged child: output %q, want no warning", m.out)
	}
}
