// Command vhdmount mounts a VHD image (with its chain of parents) as a FUSE
// filesystem holding one file, disk.raw, the whole virtual disk. See
// usageText or docs/cli.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/mountinfo"
	"github.com/vhdmount/vhdmount/vhdfs"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK    = 0 // mounted; with -f: served and unmounted cleanly
	exitFail  = 1 // could not mount, or the image could not be synced or closed
	exitUsage = 2 // bad command line
)

// lockWait is how long a mount waits for an image that another process
// holds for writing before giving up.
const lockWait = 5 * time.Second

// readyFDEnv marks the detached child; it reports readiness on file
// descriptor 3 (the first of exec.Cmd.ExtraFiles).
const readyFDEnv = "_VHDMOUNT_READY_FD"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v\n\n%s", err, usageText)
		return exitUsage
	}
	if c.help {
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	if os.Getenv(readyFDEnv) != "" {
		return runDetached(c)
	}
	if !c.foreground {
		return detach(c, stderr)
	}
	return serve(c, stderr, func(err error) {
		if err == nil {
			fmt.Fprintf(stderr, "vhdmount: %s mounted at %s\n", c.image, filepath.Join(c.mountpoint, vhdfs.FileName))
		}
	})
}

// detach re-executes vhdmount in a new session and waits until the child
// reports that the mount is live (exit 0) or why it failed (exit 1).
func detach(c *config, stderr io.Writer) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v\n", err)
		return exitFail
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v\n", err)
		return exitFail
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v\n", err)
		return exitFail
	}
	defer null.Close()
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "vhdmount: starting the server: %v\n", err)
		return exitFail
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	r.Close()
	if s := string(msg); s == "OK\n" {
		cmd.Process.Release()
		return exitOK
	} else if s != "" {
		cmd.Wait()
		fmt.Fprint(stderr, s)
		return exitFail
	}
	err = cmd.Wait()
	fmt.Fprintf(stderr, "vhdmount: the server exited before mounting (%v)\n", err)
	return exitFail
}

// runDetached is the child side of detach: it serves, reporting readiness or
// the failure on the inherited file descriptor 3.
func runDetached(c *config) int {
	ready := os.NewFile(3, "ready")
	var logw io.Writer = io.Discard
	if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_ERR, "vhdmount"); err == nil {
		logw = sl
	}
	log.SetOutput(logw)
	errBuf := &strings.Builder{}
	return serve(c, io.MultiWriter(logw, errBuf), func(err error) {
		if err == nil {
			io.WriteString(ready, "OK\n")
		} else {
			io.WriteString(ready, errBuf.String())
		}
		ready.Close()
	})
}

// serve checks the mountpoint, opens the image, mounts it, calls ready once
// (with nil when the mount is live, else after printing the error), and
// serves until unmounted or signalled.
func serve(c *config, stderr io.Writer, ready func(error)) int {
	// Catch signals before the mount exists: one that arrives while
	// mounting waits in the channel and unmounts as soon as it is live.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	d, srv, err := mount(c)
	if err != nil {
		fmt.Fprintf(stderr, "vhdmount: %s\n", strings.TrimPrefix(err.Error(), "vhd: "))
		ready(err)
		return exitFail
	}
	ready(nil)
	go func() {
		for range sig {
			if err := srv.Unmount(); err != nil {
				// Busy (a process has a file open): detach lazily, as umount -l does.
				lazyUnmount(c.mountpoint, stderr)
			}
		}
	}()
	srv.Wait()
	signal.Stop(sig)
	code := exitOK
	if err := d.Sync(); err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v\n", err)
		code = exitFail
	}
	if err := d.Close(); err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v\n", err)
		code = exitFail
	}
	return code
}

// mount validates the environment, opens the image and mounts it.
func mount(c *config) (*format.Disk, *fuse.Server, error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, nil, fmt.Errorf("/dev/fuse is missing (load the fuse module, or pass --device /dev/fuse to the container): %v", err)
	}
	mnt, err := filepath.Abs(c.mountpoint)
	if err != nil {
		return nil, nil, err
	}
	fi, err := os.Stat(mnt)
	if err != nil {
		return nil, nil, fmt.Errorf("mountpoint %s: %v", c.mountpoint, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return nil, nil, fmt.Errorf("mountpoint %s is not a directory", c.mountpoint)
	}
	if _, mounted, err := mountinfo.Lookup(mnt); err != nil {
		return nil, nil, err
	} else if mounted {
		return nil, nil, fmt.Errorf("mountpoint %s is already a mount point; unmount it first", c.mountpoint)
	}
	ro := c.ro
	if !ro && syscall.Access(c.image, 2 /* W_OK */) != nil {
		if _, err := os.Stat(c.image); err == nil {
			ro = true // a read-only image gives a read-only mount
		}
	}
	opts := &format.Options{ReadOnly: ro, Parent: c.parent, IgnoreChecksums: c.ignoreChecksums}
	d, err := format.Open(c.image, opts)
	// umount returns before the previous server has synced and closed the
	// image; give a server that is shutting down a moment to let go.
	for deadline := time.Now().Add(lockWait); errors.Is(err, format.ErrLocked) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		d, err = format.Open(c.image, opts)
	}
	if err != nil {
		return nil, nil, err
	}
	abs, _ := filepath.Abs(c.image)
	srv, err := vhdfs.Mount(mnt, d, vhdfs.Options{ReadOnly: ro, AllowOther: c.allowOther, Debug: c.debug, FsName: abs})
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("mounting %s: %v", c.mountpoint, err)
	}
	return d, srv, nil
}

// lazyUnmount detaches the mount even while files in it are open.
func lazyUnmount(mnt string, stderr io.Writer) {
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err == nil {
		return
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err != nil {
		fmt.Fprintf(stderr, "vhdmount: unmounting %s: %v: %s\n", mnt, err, out)
	}
}
