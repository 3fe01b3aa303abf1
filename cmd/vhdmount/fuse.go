package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// captureStderr runs f with os.Stderr replaced by a pipe and returns what
// was written to it: go-fuse starts fusermount3 with os.Stderr as its
// standard error, and a detached server's is /dev/null, so without this its
// reason for failing ("failed to open /dev/fuse: Permission denied") is lost.
func captureStderr(f func() error) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", f()
	}
	old := os.Stderr
	os.Stderr = w
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 16<<10))
		io.Copy(io.Discard, r)
		done <- string(b)
	}()
	err = f()
	os.Stderr = old
	w.Close()
	var said string
	select {
	case said = <-done:
	case <-time.After(2 * time.Second): // a helper's child still holds the pipe
	}
	r.Close()
	return strings.TrimSpace(said), err
}

// mountFailure explains a failed FUSE mount: fusermount3's own message
// instead of go-fuse's "fusermount exited with code 256", and a hint.
func mountFailure(err error, helperSaid string, c *config) string {
	msg := oneLine(err.Error())
	switch {
	case helperSaid != "" && strings.Contains(msg, "fusermount"):
		msg = oneLine(helperSaid)
	case helperSaid != "":
		msg += " (" + oneLine(helperSaid) + ")"
	}
	return msg + "; " + fuseHint(c, msg)
}

// fuseHint guesses the likeliest cause of a failed FUSE mount.
func fuseHint(c *config, msg string) string {
	const rw = 4 | 2 // R_OK | W_OK
	if err := syscall.Access("/dev/fuse", rw); err != nil {
		mode := ""
		if fi, err := os.Stat("/dev/fuse"); err == nil {
			mode = fmt.Sprintf(" (mode %04o)", fi.Mode().Perm())
		}
		return "hint: /dev/fuse" + mode + " must be readable and writable by you; most systems make it 0666, and a container needs --device /dev/fuse"
	}
	if c.allowOther && os.Getuid() != 0 && !userAllowOther() {
		return "hint: allow_other needs the line user_allow_other in /etc/fuse.conf when not mounting as root"
	}
	if strings.Contains(msg, "executable file not found") {
		return "hint: mounting as an ordinary user needs fusermount3 (Debian package fuse3)"
	}
	if os.Geteuid() == 0 {
		return "hint: in a container, mounting needs CAP_SYS_ADMIN (--cap-add SYS_ADMIN) and --device /dev/fuse"
	}
	return "hint: check the permissions of /dev/fuse, user_allow_other in /etc/fuse.conf for allow_other, and CAP_SYS_ADMIN in a container"
}

// userAllowOther reports whether /etc/fuse.conf enables user_allow_other.
func userAllowOther() bool {
	f, err := os.Open("/etc/fuse.conf")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "user_allow_other" {
			return true
		}
	}
	return false
}
