package main

import (
	"debug/elf"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// TestVersion: vhd --version prints one line with the Go version.
func TestVersion(t *testing.T) {
	code, out, errs := runVHD("--version")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "vhd ") || !strings.Contains(out, " (go1.") || strings.Count(out, "\n") != 1 {
		t.Errorf("vhd --version: exit %d, %q, %q", code, out, errs)
	}
}

// TestMakeInstall runs `make install` into a DESTDIR and checks every file,
// that the binaries are static and run, that the man pages pass a roff
// linter and the completions parse; then `make uninstall` removes them all.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both commands (-short)")
	}
	mk, err := exec.LookPath("make")
	testenv.Require(t, err == nil, "make not installed")
	goBin, err := exec.LookPath("go")
	testenv.Require(t, err == nil, "go not in PATH")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "dest")
	vars := []string{"DESTDIR=" + dest, "PREFIX=/usr", "BIN=" + filepath.Join(tmp, "bin"), "GO=" + goBin}
	makeRun := func(target string) {
		cmd := exec.Command(mk, append([]string{"-C", root, "--no-print-directory", target}, vars...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	makeRun("install")

	want := []string{
		"usr/bin/vhd",
		"usr/bin/vhdmount",
		"usr/share/bash-completion/completions/vhd",
		"usr/share/bash-completion/completions/vhdmount",
		"usr/share/man/man1/vhd.1",
		"usr/share/man/man8/vhdmount.8",
		"usr/share/zsh/site-functions/_vhd",
		"usr/share/zsh/site-functions/_vhdmount",
	}
	if got := files(t, dest); !slices.Equal(got, want) {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, b := range []string{"vhd", "vhdmount"} {
		p := filepath.Join(dest, "usr/bin", b)
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, err %v; want 0755", p, st.Mode(), err)
		}
		static(t, p)
	}
	out, err := exec.Command(filepath.Join(dest, "usr/bin/vhd"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "vhd ") || !strings.Contains(string(out), "(go1.") {
		t.Errorf("installed vhd --version: %v %q", err, out)
	}
	out, err = exec.Command(filepath.Join(dest, "usr/bin/vhdmount"), "--help").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "usage: vhdmount") {
		t.Errorf("installed vhdmount --help: %v %q", err, out)
	}

	// Man pages: mandoc's linter, else groff with warnings on.
	pages := []string{filepath.Join(dest, "usr/share/man/man1/vhd.1"), filepath.Join(dest, "usr/share/man/man8/vhdmount.8")}
	if m, err := exec.LookPath("mandoc"); err == nil {
		if out, err := exec.Command(m, append([]string{"-T", "lint", "-W", "warning"}, pages...)...).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("mandoc -T lint: %v\n%s", err, out)
		}
	} else {
		g, err := exec.LookPath("groff")
		testenv.Require(t, err == nil, "neither mandoc nor groff installed to check the man pages")
		if out, err := exec.Command(g, append([]string{"-man", "-z", "-ww"}, pages...)...).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff -man -z -ww: %v\n%s", err, out)
		}
	}
	// Completions parse.
	for _, f := range []string{"vhd", "vhdmount"} {
		p := filepath.Join(dest, "usr/share/bash-completion/completions", f)
		if out, err := exec.Command("bash", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", p, err, out)
		}
	}
	if z, err := exec.LookPath("zsh"); err == nil {
		for _, f := range []string{"_vhd", "_vhdmount"} {
			p := filepath.Join(dest, "usr/share/zsh/site-functions", f)
			if out, err := exec.Command(z, "-n", p).CombinedOutput(); err != nil {
				t.Errorf("zsh -n %s: %v\n%s", p, err, out)
			}
		}
	} else {
		t.Log("zsh not installed: zsh completions not parsed")
	}

	makeRun("uninstall")
	if got := files(t, dest); len(got) != 0 {
		t.Errorf("left after make uninstall: %q", got)
	}
}

// files lists the regular files under dir, relative and sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

// static fails unless p is an ELF executable without a program interpreter
// or shared libraries (what `file` calls statically linked, ldd "not a
// dynamic executable").
func static(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (program header %v)", p, prog.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q", p, libs)
	}
}
