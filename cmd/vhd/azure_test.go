package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// footerFields reads CurrentSize and Disk Type from the last 512 bytes of
// a VHD file, by hand.
func footerFields(t *testing.T, path string) (size int64, typ uint32, fileSize int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := b[len(b)-512:]
	if string(f[:8]) != "conectix" {
		t.Fatalf("%s: no footer at the end", path)
	}
	return int64(binary.BigEndian.Uint64(f[0x30:])), binary.BigEndian.Uint32(f[0x3C:]), int64(len(b))
}

// TestAzure: --azure rounds sizes up to a whole MiB (and says so), refuses
// what Azure refuses, and check --azure lists each reason.
func TestAzure(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }

	code, _, e := runVHD("create", "-t", "fixed", "--azure", p("a.vhd"), "25000448")
	if code != 0 || !strings.Contains(e, "rounded up from 25000448 to 25165824") {
		t.Errorf("create --azure: exit %d, stderr %q", code, e)
	}
	if size, typ, fsize := footerFields(t, p("a.vhd")); size != 24<<20 || typ != 2 || fsize != 24<<20+512 {
		t.Errorf("a.vhd: CurrentSize %d, type %d, file %d bytes; want 24 MiB, fixed (2), 24 MiB + 512", size, typ, fsize)
	}
	if code, out, _ := runVHD("check", "--azure", p("a.vhd")); code != 0 || !strings.Contains(out, "Azure requirements met") {
		t.Errorf("check --azure of a.vhd: exit %d, %q", code, out)
	}
	if code, _, e := runVHD("create", "-t", "fixed", "--azure", p("whole.vhd"), "32M"); code != 0 || e != "" {
		t.Errorf("create --azure of a whole MiB: exit %d, stderr %q (want nothing said)", code, e)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"create", "--azure", p("x.vhd"), "32M"}, 2, "--azure needs -t fixed"},
		{[]string{"create", "-t", "fixed", "--azure", p("x.vhd"), "5M"}, 1, "below Azure's smallest"},
		{[]string{"convert", "-O", "dynamic", "--azure", p("a.vhd"), p("x.vhd")}, 2, "--azure needs -O fixed"},
	} {
		if code, _, e := runVHD(c.args...); code != c.code || !strings.Contains(e, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, e, c.code, c.want)
		}
	}
	if _, err := os.Stat(p("x.vhd")); err == nil {
		t.Error("a refused command left x.vhd")
	}

	// A dynamic disk of 23.8 MiB: check --azure lists both reasons;
	// convert -O fixed --azure makes one Azure takes, reading the same.
	if code, _, e := runVHD("create", p("dyn.vhd"), "25000448"); code != 0 {
		t.Fatal(e)
	}
	code, out, _ := runVHD("check", "--azure", p("dyn.vhd"))
	if code != 1 || !strings.Contains(out, "Azure takes a fixed VHD only") || !strings.Contains(out, "not a whole number of MiB") {
		t.Errorf("check --azure of dyn.vhd: exit %d, %q", code, out)
	}
	if code, _, e := runVHD("check", p("dyn.vhd")); code != 0 {
		t.Errorf("check without --azure: exit %d, %q", code, e)
	}
	code, _, e = runVHD("convert", "-O", "fixed", "--azure", p("dyn.vhd"), p("fixed.vhd"))
	if code != 0 || !strings.Contains(e, "rounded up") {
		t.Errorf("convert --azure: exit %d, stderr %q", code, e)
	}
	if size, typ, fsize := footerFields(t, p("fixed.vhd")); size != 24<<20 || typ != 2 || fsize != 24<<20+512 {
		t.Errorf("fixed.vhd: CurrentSize %d, type %d, file %d bytes", size, typ, fsize)
	}
	if code, out, _ := runVHD("check", "--azure", p("fixed.vhd")); code != 0 {
		t.Errorf("check --azure of the converted image: exit %d, %q", code, out)
	}
	// Damage the footer's checksum: listed (the check reads it anyway).
	b, _ := os.ReadFile(p("fixed.vhd"))
	b[len(b)-512+0x40] ^= 1
	os.WriteFile(p("bad.vhd"), b, 0o644)
	if code, out, _ := runVHD("check", "--azure", p("bad.vhd")); code != 1 || !strings.Contains(out, "Azure would refuse it") || !strings.Contains(out, "hecksum") {
		t.Errorf("check --azure of a bad checksum: exit %d, %q", code, out)
	}
}
