//go:build linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/mountinfo"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// binDir holds the binaries built for this run.
var binDir string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "vhdmount-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755) // an unprivileged user runs these too
		binDir = dir
		for _, c := range []string{"vhd", "vhdmount"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c)
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building %s: %v\n%s", c, err, out)
				return 1
			}
		}
		code := m.Run()
		if left := leftoverMounts(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: mounts left behind by the tests: %v\n", left)
			for _, m := range left {
				syscall.Unmount(m, syscall.MNT_DETACH)
			}
			code = 1
		}
		if left := leftoverLoops(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: loop devices left behind by the tests: %v\n", left)
			code = 1
		}
		return code
	}()
	testenv.Cleanup()
	os.Exit(code)
}

// repoRoot finds the module root above the working directory (go test runs
// in integration/, the compiled test binary wherever it is started).
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// tempPrefix marks every directory the tests make, so leftovers can be found.
const tempPrefix = "vhdmount-it-"

// leftoverMounts lists mounts on directories these tests made.
func leftoverMounts() []string {
	var out []string
	for _, m := range mounts() {
		if strings.Contains(m.Point, tempPrefix) {
			out = append(out, m.Point)
		}
	}
	return out
}

// leftoverLoops lists loop devices backed by files these tests made.
func leftoverLoops() []string {
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return nil
	}
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, tempPrefix) {
			left = append(left, strings.TrimSpace(line))
		}
	}
	return left
}

// mounts lists the mount table (empty if it cannot be read).
func mounts() []mountinfo.Mount {
	ms, _ := mountinfo.List()
	return ms
}

func mountedAt(dir string) (mountinfo.Mount, bool) {
	m, ok, _ := mountinfo.Lookup(dir)
	return m, ok
}

// requireMount skips (fails in CI) unless we can mount FUSE and loop devices.
func requireMount(t *testing.T) {
	t.Helper()
	testenv.Require(t, os.Geteuid() == 0, "integration tests need root (FUSE direct mount, loop devices)")
	_, err := os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "integration tests need /dev/fuse")
}

// tempDir makes a directory with the test prefix, removed at cleanup.
func tempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, busy := mountedAt(d); busy {
			t.Errorf("%s still mounted at cleanup", d)
			syscall.Unmount(d, syscall.MNT_DETACH)
		}
		os.RemoveAll(d)
	})
	return d
}

func bin(name string) string { return filepath.Join(binDir, name) }

// run runs a binary and returns its combined output and exit code.
func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return buf.String(), code
}

// mustRun runs a command and fails the test if it exits non-zero.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, code := run(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return out
}

// mounted is a vhdmount server running in the foreground as a subprocess.
type mounted struct {
	dir  string // mountpoint
	file string // dir/disk.raw
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

// mountImage starts `vhdmount -f args... image mnt`, waits (bounded) until the
// mount shows in mountinfo, and registers an unmount for cleanup.
func mountImage(t *testing.T, image string, args ...string) *mounted {
	t.Helper()
	dir := tempDir(t)
	m := &mounted{dir: dir, file: filepath.Join(dir, "disk.raw"), out: &bytes.Buffer{}, done: make(chan error, 1)}
	m.cmd = exec.Command(bin("vhdmount"), append(append([]string{"-f"}, args...), image, dir)...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(func() { m.unmount(t) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := mountedAt(dir); ok {
			return m
		}
		select {
		case err := <-m.done:
			m.done <- err
			t.Fatalf("vhdmount exited before mounting (%v):\n%s", err, m.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 20s:\n%s", dir, m.out)
		}
	}
}

// unmount unmounts and waits for the server to exit; it is idempotent.
func (m *mounted) unmount(t *testing.T) {
	t.Helper()
	if _, ok := mountedAt(m.dir); ok {
		if err := unmountRetry(m.dir); err != nil {
			t.Errorf("umount %s: %v; detaching lazily", m.dir, err)
			syscall.Unmount(m.dir, syscall.MNT_DETACH)
		}
	}
	if m.cmd.ProcessState != nil {
		return
	}
	select {
	case err := <-m.done:
		m.done <- err
		if err != nil {
			t.Errorf("vhdmount exited with %v after unmount:\n%s", err, m.out)
		}
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		t.Errorf("vhdmount did not exit within 30s of unmount:\n%s", m.out)
	}
}

// unmountRetry unmounts dir, retrying for up to 2s while it is busy: the
// kernel may still be releasing a file that was just closed.
func unmountRetry(dir string) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := syscall.Unmount(dir, 0)
		if err != syscall.EBUSY || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loopMount attaches file to a loop device, mounts it at a new directory with
// opts, and registers the unmount and detach for cleanup.
func loopMount(t *testing.T, file string, opts string) string {
	t.Helper()
	dir := tempDir(t)
	mustRun(t, "mount", "-o", "loop,"+opts, file, dir)
	t.Cleanup(func() { loopUnmount(t, dir) })
	return dir
}

// loopUnmount unmounts a loop mount (which also frees the loop device); it is idempotent.
func loopUnmount(t *testing.T, dir string) {
	t.Helper()
	if _, ok := mountedAt(dir); !ok {
		return
	}
	if err := unmountRetry(dir); err != nil {
		t.Errorf("umount %s: %v", dir, err)
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
}

// corpusImage returns an openable copy of a corpus file (see testenv.Unpack).
func corpusImage(t *testing.T, rel string) string {
	t.Helper()
	return testenv.Unpack(t, testenv.CorpusDir(t), rel)
}
