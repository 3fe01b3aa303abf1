package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// reporter is where vhdmount says what happens: stderr in the foreground,
// syslog when detached, and in both cases the --log file if there is one.
// Once the mount is live nobody reads the exit status of a detached server,
// so I/O errors and failures at exit exist only here.
type reporter struct {
	mu   sync.Mutex
	outs []io.Writer // each gets "vhdmount: MESSAGE\n"
	file *os.File    // the --log file: "TIME vhdmount[PID]: MESSAGE\n"
}

func newReporter(outs ...io.Writer) *reporter { return &reporter{outs: outs} }

func (r *reporter) add(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outs = append(r.outs, w)
}

func (r *reporter) remove(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outs = slices.DeleteFunc(r.outs, func(o io.Writer) bool { return o == w })
}

// Printf reports one message (vhdfs.Options.Logf has this signature).
func (r *reporter) Printf(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	msg = strings.TrimPrefix(msg, "vhdmount: ")
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.outs {
		fmt.Fprintf(w, "vhdmount: %s\n", msg)
	}
	if r.file != nil {
		fmt.Fprintf(r.file, "%s vhdmount[%d]: %s\n", time.Now().UTC().Format(time.RFC3339), os.Getpid(), msg)
	}
}

// Note writes a message to the --log file only: that a detached server
// mounted and when it ended, which nobody else is told.
func (r *reporter) Note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.file != nil {
		fmt.Fprintf(r.file, "%s vhdmount[%d]: %s\n", time.Now().UTC().Format(time.RFC3339), os.Getpid(), fmt.Sprintf(format, args...))
	}
}

// Write makes the reporter a log.Logger output (go-fuse logs through it).
func (r *reporter) Write(p []byte) (int, error) {
	r.Printf("%s", p)
	return len(p), nil
}

// openLog opens the --log file for appending. It must be a regular file
// (or not exist yet): a FIFO or a device named by mistake, perhaps in
// fstab, is neither opened in a way that blocks nor written.
func (r *reporter) openLog(path string) error {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("log file %s is not a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %v", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("log file %s is not a regular file", path)
	}
	r.mu.Lock()
	r.file = f
	r.mu.Unlock()
	return nil
}

// Close closes the --log file.
func (r *reporter) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.file == nil {
		return nil
	}
	err := r.file.Close()
	r.file = nil
	return err
}

// oneLine joins the lines of a tool's message with "; ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
