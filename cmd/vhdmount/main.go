// Command vhdmount mounts a VHD image (with its chain of parents) as a FUSE
// filesystem holding one file, disk.raw, the whole virtual disk. See
// usageText or docs/cli.md.
package main

import (
	"errors"
	"fmt"
	"github.com/vhdmount/vhdmount/internal/version"
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
	exitFail  = 1 // could not mount, or the image could not be synced or closed, or was deleted or moved while mounted
	exitUsage = 2 // bad command line
)

// lockWait is how long a mount waits for an image that another process
// (not a live mount) holds for writing before giving up.
const lockWait = 5 * time.Second

// readyFDEnv marks the detached child; it reports readiness on file
// descriptor 3 (the first of exec.Cmd.ExtraFiles).
const readyFDEnv = "_VHDMOUNT_READY_FD"

// readyOK ends what the detached child sends when the mount is live.
const readyOK = "OK\n"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "vhdmount: %v; see 'vhdmount --help'\n", err)
		return exitUsage
	}
	if c.help {
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	if c.version {
		fmt.Fprintln(stdout, "vhdmount", version.String())
		return exitOK
	}
	if os.Getenv(readyFDEnv) != "" {
		return runDetached(c)
	}
	if !c.foreground {
		return detach(c, stderr)
	}
	rep := newReporter(stderr)
	return serve(c, rep, func(err error) {
		if err == nil {
			rep.Printf("%s mounted at %s%s", c.image, filepath.Join(c.mountpoint, vhdfs.FileName), c.overlayNote())
		}
	})
}

// detach re-executes vhdmount in a new session and waits until the child
// reports that the mount is live (exit 0) or why it failed (exit 1). What
// the child says before that (notices, the error) is printed here.
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
	if s, ok := strings.CutSuffix(string(msg), readyOK); ok {
		fmt.Fprint(stderr, s)
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

// runDetached is the child side of detach: it serves, reporting to syslog
// (and the --log file), and sends what it reported before the mount went
// live, then readyOK, on the inherited file descriptor 3.
func runDetached(c *config) int {
	ready := os.NewFile(3, "ready")
	early := &strings.Builder{}
	rep := newReporter(early)
	if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_ERR, "vhdmount"); err == nil {
		rep.add(sl)
	}
	return serve(c, rep, func(err error) {
		rep.remove(early)
		if err == nil {
			rep.Note("%s mounted at %s%s", c.image, filepath.Join(c.mountpoint, vhdfs.FileName), c.overlayNote())
			early.WriteString(readyOK)
		}
		io.WriteString(ready, early.String())
		ready.Close()
	})
}

// serve opens the --log file, checks the mountpoint, opens the image,
// mounts it, calls ready once (with nil when the mount is live, else after
// reporting the error), and serves until unmounted or signalled.
func serve(c *config, rep *reporter, ready func(error)) int {
	defer rep.Close()
	// go-fuse (and anything else using the log package) reports through rep.
	log.SetFlags(0)
	log.SetOutput(rep)
	// Catch signals before the mount exists: one that arrives while
	// mounting waits in the channel and unmounts as soon as it is live.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	if c.logFile != "" {
		if err := rep.openLog(c.logFile); err != nil {
			rep.Printf("%v", err)
			ready(err)
			return exitFail
		}
	}
	ov, err := prepareOverlay(c, rep)
	if err != nil {
		rep.Printf("%s", strings.TrimPrefix(err.Error(), "vhd: "))
		ready(err)
		return exitFail
	}
	d, srv, err := mount(c, rep)
	if err != nil {
		ov.done(false, rep)
		rep.Printf("%s", strings.TrimPrefix(err.Error(), "vhd: "))
		ready(err)
		return exitFail
	}
	ready(nil)
	go func() {
		for range sig {
			if err := srv.Unmount(); err != nil {
				// Busy (a process has a file open): detach lazily, as umount -l does.
				lazyUnmount(c.mountpoint, rep)
			}
		}
	}()
	srv.Wait()
	signal.Stop(sig)
	code := exitOK
	if err := d.Disk.Sync(); err != nil {
		rep.Printf("%v", err)
		code = exitFail
	}
	if gone := d.gone(); gone != "" {
		rep.Printf("%s", gone)
		code = exitFail
	}
	if err := d.Close(); err != nil {
		rep.Printf("%v", err)
		code = exitFail
	}
	ov.done(true, rep)
	rep.Note("%s unmounted from %s; exit status %d", c.image, c.mountpoint, code)
	return code
}

// mount validates the environment, opens the image and mounts it.
func mount(c *config, rep *reporter) (*watchedDisk, *fuse.Server, error) {
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
	image := c.image
	if c.child != "" {
		image = c.child // IMAGE is the overlay's parent, only read
	}
	ro := c.ro
	if !ro && c.child == "" {
		if err := syscall.Access(c.image, 2 /* W_OK */); err != nil {
			if _, serr := os.Stat(c.image); serr == nil {
				// A read-only image gives a read-only mount; say so, as
				// the user asked for a writable one.
				ro = true
				rep.Printf("%s is not writable (%v): mounting read-only", c.image, err)
			}
		}
	}
	opts := &format.Options{ReadOnly: ro, Parent: c.parent, IgnoreChecksums: c.ignoreChecksums}
	d, err := format.Open(image, opts)
	// umount returns before the previous server has synced and closed the
	// image: give a server that is shutting down a moment to let go. A live
	// mount will not let go: name it and fail at once.
	for deadline := time.Now().Add(lockWait); errors.Is(err, format.ErrLocked); {
		if at := lockHolder(&config{image: image, parent: c.parent}); at != "" {
			return nil, nil, fmt.Errorf("%s: image in use by the mount at %s; unmount it first", image, at)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
		d, err = format.Open(image, opts)
	}
	if err != nil {
		return nil, nil, err
	}
	if c.child != "" {
		if err := checkOverlayParent(c, d); err != nil {
			d.Close()
			return nil, nil, err
		}
	}
	// What an image of the chain accepted but found doubtful, as vhd info
	// shows it: one line each, naming the file.
	for _, warn := range d.Warnings() {
		rep.Printf("warning: %s", oneLine(warn))
	}
	w := &watchedDisk{Disk: d}
	if !d.ReadOnly() {
		if err := w.watch(image); err != nil {
			d.Close()
			return nil, nil, err
		}
	}
	abs, _ := filepath.Abs(image)
	var srv *fuse.Server
	helperSaid, err := captureStderr(func() error {
		var err error
		srv, err = vhdfs.Mount(mnt, w, vhdfs.Options{ReadOnly: ro, AllowOther: c.allowOther, Debug: c.debug, FsName: abs, Logf: rep.Printf, Notef: rep.Note, NoPartitions: c.noPartitions})
		return err
	})
	if err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("mounting %s: %s", c.mountpoint, mountFailure(err, helperSaid, c))
	}
	if helperSaid != "" {
		rep.Printf("%s", oneLine(helperSaid))
	}
	return w, srv, nil
}

// lazyUnmount detaches the mount even while files in it are open.
func lazyUnmount(mnt string, rep *reporter) {
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err == nil {
		return
	}
	if out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err != nil {
		rep.Printf("unmounting %s: %v: %s", mnt, err, oneLine(string(out)))
	}
}
