package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The ceiling: the smallest go-fuse server that exposes a raw file as
// disk.raw, with the same mount options vhdmount uses (1 MiB requests,
// multithreaded, same timeouts). Whatever it reaches is the most any FUSE
// server can reach on this machine with this library.

//
// The null server is the same with no file behind it: reads return zeros
// and writes are dropped, so a request costs the FUSE round trip alone.
// No FUSE server built on this library can answer a request faster.

type rawRoot struct {
	fs.Inode
	f    *os.File // nil for the null server
	size int64
}

func (r *rawRoot) OnAdd(ctx context.Context) {
	r.AddChild("disk.raw", r.NewPersistentInode(ctx, &rawFile{f: r.f, size: r.size}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2}), false)
}

type rawFile struct {
	fs.Inode
	f    *os.File // nil: the null server
	size int64    // fixed at mount, like a disk's
}

func (r *rawFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o644
	out.Size = uint64(r.size)
	return 0
}

func (r *rawFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, 0
}

func (r *rawFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if r.f == nil {
		n := max(0, min(int64(len(dest)), r.size-off))
		clear(dest[:n])
		return fuse.ReadResultData(dest[:n]), 0
	}
	n, err := r.f.ReadAt(dest, off)
	if n > 0 {
		err = nil
	}
	return fuse.ReadResultData(dest[:n]), fs.ToErrno(err)
}

func (r *rawFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if r.f == nil {
		return uint32(len(data)), 0
	}
	n, err := r.f.WriteAt(data, off)
	return uint32(n), fs.ToErrno(err)
}

func (r *rawFile) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if r.f == nil {
		return 0
	}
	return fs.ToErrno(r.f.Sync())
}

// serveRaw mounts file at mnt and serves until unmounted or signalled.
func serveRaw(file, mnt string) error {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return serve(&rawRoot{f: f, size: fi.Size()}, file, mnt)
}

// serveNull mounts the null server, a disk.raw of size bytes, at mnt.
func serveNull(size int64, mnt string) error {
	return serve(&rawRoot{size: size}, "null", mnt)
}

func serve(root *rawRoot, file, mnt string) error {
	sec := time.Second
	srv, err := fs.Mount(mnt, root, &fs.Options{
		MountOptions: fuse.MountOptions{FsName: file, Name: "rawceiling", MaxWrite: 1 << 20, MaxReadAhead: 1 << 20, DirectMount: true, DisableXAttrs: true},
		AttrTimeout:  &sec,
		EntryTimeout: &sec,
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Unmount()
	}()
	srv.Wait()
	return nil
}
