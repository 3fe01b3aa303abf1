//go:build linux

package format

import (
	"bufio"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// qemuIO runs qemu-io with args and returns its combined output and error.
func qemuIO(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	return string(out), err
}

// qemuHold starts qemu-io on img with extra args, reading commands from a
// pipe, and returns once it has the image open (it answered a read). The
// returned function ends it.
func qemuHold(t *testing.T, img string, args ...string) func() {
	t.Helper()
	cmd := exec.Command("qemu-io", append(args, "-f", "vpc", img)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	io.WriteString(in, "read 0 512\n")
	ready := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		var seen strings.Builder
		for {
			line, err := r.ReadString('\n')
			seen.WriteString(line)
			if strings.Contains(line, "read 512/512") || err != nil {
				ready <- seen.String()
				io.Copy(io.Discard, r)
				return
			}
		}
	}()
	select {
	case s := <-ready:
		if !strings.Contains(s, "read 512/512") {
			stop()
			t.Fatalf("qemu-io %v did not open %s: %s", args, img, s)
		}
	case <-time.After(20 * time.Second):
		stop()
		t.Fatalf("qemu-io %v did not answer", args)
	}
	return stop
}

// TestQemuLocks: while we write a differencing image, qemu refuses to open
// it (for writing or reading) and to write its parent, but may read the
// parent; while qemu has an image open, we refuse to open it for writing.
// qemu-io is the independent party: its image locking decides.
func TestQemuLocks(t *testing.T) {
	_, err := exec.LookPath("qemu-io")
	testenv.Require(t, err == nil, "qemu-io not installed (apt-get install qemu-utils)")
	dir := t.TempDir()
	base, child := filepath.Join(dir, "base.vhd"), filepath.Join(dir, "child.vhd")
	if err := Create(base, CreateOptions{Type: TypeDynamic, Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(child, CreateOptions{Parent: base}); err != nil {
		t.Fatal(err)
	}

	w, err := Open(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args    []string
		refused bool
	}{
		{[]string{"-f", "vpc", "-c", "write 0 512", child}, true},
		{[]string{"-r", "-f", "vpc", "-c", "read 0 512", child}, true}, // a qemu reader does not share write
		{[]string{"-f", "vpc", "-c", "write 0 512", base}, true},
		{[]string{"-r", "-f", "vpc", "-c", "read 0 512", base}, false}, // the parent may be read
	} {
		out, err := qemuIO(t, c.args...)
		if c.refused && (err == nil || !strings.Contains(out, "lock")) {
			t.Errorf("qemu-io %v while we write the child: %v %s; want a refusal mentioning a lock", c.args, err, out)
		}
		if !c.refused && (err != nil || !strings.Contains(out, "read 512/512")) {
			t.Errorf("qemu-io %v while we write the child: %v %s; want it to read", c.args, err, out)
		}
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		out, err := exec.Command("qemu-img", "info", "-f", "vpc", child).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") {
			t.Errorf("qemu-img info while we write the image: %v %s; want a refusal mentioning a lock", err, out)
		}
		if out, err := exec.Command("qemu-img", "info", "-U", "-f", "vpc", child).CombinedOutput(); err != nil {
			t.Errorf("qemu-img info -U (force share) while we write the image: %v %s", err, out)
		}
	}
	w.Close()
	if out, err := qemuIO(t, "-f", "vpc", "-c", "read 0 512", child); err != nil {
		t.Fatalf("qemu-io once we closed the child: %v %s", err, out)
	}

	// The reverse: qemu holds the image, as a writer then as a reader.
	for _, args := range [][]string{nil, {"-r"}} {
		stop := qemuHold(t, child, args...)
		if d, err := Open(child, nil); !errors.Is(err, ErrLocked) {
			if err == nil {
				d.Close()
			}
			t.Errorf("our writer while qemu-io %v holds the child: %v, want ErrLocked", args, err)
		}
		if d, err := Open(child, &Options{ReadOnly: true}); err != nil {
			t.Errorf("our reader while qemu-io %v holds the child: %v", args, err)
		} else {
			d.Close()
		}
		stop()
	}
	stop := qemuHold(t, base)
	if d, err := Open(child, nil); !errors.Is(err, ErrLocked) {
		if err == nil {
			d.Close()
		}
		t.Errorf("our writer of the child while qemu-io writes its parent: %v, want ErrLocked", err)
	}
	stop()
	d, err := Open(child, nil)
	if err != nil {
		t.Fatalf("our writer once qemu-io is gone: %v", err)
	}
	d.Close()
}
