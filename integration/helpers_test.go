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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/mountinfo"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// binDir holds the binaries built for this run.
var binDir string

// runDir holds every file and directory this run makes: TestMain points
// TMPDIR at it, so temp dirs, unpacked corpus files and the demo's work dir
// land there, and leftovers are those of this run, not of another run or
// another user's mounts on the same machine.
var runDir string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", tempPrefix+"run-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		os.Chmod(dir, 0o755) // an unprivileged user runs these too
		runDir = dir
		defer func() {
			if err := os.RemoveAll(runDir); err != nil {
				fmt.Fprintf(os.Stderr, "removing %s: %v\n", runDir, err)
			}
		}()
		os.Setenv("TMPDIR", runDir)
		binDir = filepath.Join(runDir, "bin")
		for _, c := range []string{"vhd", "vhdmount"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, c), "./cmd/"+c)
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building %s: %v\n%s", c, err, out)
				return 1
			}
		}
		os.Chmod(binDir, 0o755)
		code := m.Run()
		if left := leftoverServers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: vhdmount servers left running by the tests: %v\n", left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			code = 1
		}
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
		testenv.Cleanup()
		return code
	}()
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

// tempPrefix marks every directory the tests make.
const tempPrefix = "vhdmount-it-"

// ownMounts lists the mounts on directories of this run.
func ownMounts() []string {
	var out []string
	for _, m := range mounts() {
		if strings.HasPrefix(m.Point, runDir+"/") {
			out = append(out, m.Point)
		}
	}
	return out
}

// leftoverMounts lists mounts on directories this run made.
func leftoverMounts() []string { return ownMounts() }

// leftoverServers lists the vhdmount processes still serving something of
// this run (in any mount namespace), after giving servers that are
// shutting down a few seconds to exit.
func leftoverServers() []int {
	var pids []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		pids = pids[:0]
		for pid, args := range processes() {
			if strings.HasSuffix(args[0], "vhdmount") && strings.Contains(strings.Join(args, " "), runDir) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
	}
}

// processes returns the argv of every running process by pid (zombies,
// whose argv is empty, are left out).
func processes() map[int][]string {
	out := map[int][]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		out[pid] = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
	return out
}

// leftoverLoops lists loop devices backed by files this run made.
func leftoverLoops() []string {
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return nil
	}
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, runDir+"/") {
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
	return runIn(t, "", name, args...)
}

// runIn is run with the working directory dir ("" for the test's).
func runIn(t *testing.T, dir, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
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
