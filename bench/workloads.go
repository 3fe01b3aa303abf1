package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is one file a measurement runs on, and how to make it cold.
type target struct {
	file string   // what fio reads or writes
	drop []string // files whose page cache a cold run drops first (file included)
	slow bool     // a slow server: bound sequential runs by time
	done func()   // after the run (write targets: unmount, remove); may be nil
}

// contender is one thing under test; setup gives the target of one run
// (the same mounted file for read workloads, a fresh one for writes).
type contender struct {
	name  string
	setup func() (target, error)
}

func fixed(name string, t target) contender {
	return contender{name, func() (target, error) { return t, nil }}
}

// workload is one row of the report.
type workload struct {
	name         string
	unit         string
	higherBetter bool
	cs           []contender
	// run measures one target of contender name in repetition r.
	run func(r int, name string, t target) (float64, error)
}

// peers says which optional peers are installed.
type peers struct {
	vhdimount, qemu, qsd bool
}

func checkPeers(rep *report) peers {
	var p peers
	if _, err := exec.LookPath("vhdimount"); err == nil {
		p.vhdimount = true
	} else {
		rep.skip("vhdimount", "not installed (apt-get install libvhdi-utils)")
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		p.qemu = true
	} else {
		rep.skip("qemu-img", "not installed (apt-get install qemu-utils)")
	}
	if _, err := exec.LookPath("qemu-storage-daemon"); err == nil {
		p.qsd = true
	} else {
		rep.skip("qsd", "qemu-storage-daemon not installed (apt-get install qemu-system-common)")
	}
	return p
}

// measure runs w: every repetition runs every contender once, the order
// rotated by one each repetition so no contender always runs first or last.
func measure(c *config, rep *report, w workload) {
	if !c.want(w.name) || len(w.cs) == 0 {
		return
	}
	fmt.Printf("%s:", w.name)
	t0 := time.Now()
	defer func() { fmt.Printf(" %.0fs\n", time.Since(t0).Seconds()) }()
	for r := 0; r < c.reps; r++ {
		for i := range w.cs {
			ct := w.cs[(i+r)%len(w.cs)]
			ts := time.Now()
			t, err := ct.setup()
			tr := time.Now()
			if err != nil {
				rep.skip(w.name+"/"+ct.name, err.Error())
				continue
			}
			v, err := w.run(r, ct.name, t)
			td := time.Now()
			if t.done != nil {
				t.done()
			}
			if c.verbose {
				fmt.Printf("[%s: setup %.1fs, run %.1fs, done %.1fs]", ct.name, tr.Sub(ts).Seconds(), td.Sub(tr).Seconds(), time.Since(td).Seconds())
			}
			if err != nil {
				rep.skip(w.name+"/"+ct.name, err.Error())
				continue
			}
			rep.add(w.name, ct.name, w.unit, r, v, w.higherBetter)
			fmt.Print(".")
		}
	}
}

// ---- serving a file ----

// cleanups run at exit in reverse order: unmounts, loop detaches, daemons.
var cleanups []func()

func atExit(f func()) { cleanups = append(cleanups, f) }

func runCleanups() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func newMountpoint(c *config, name string) (string, error) {
	return os.MkdirTemp(c.dir, "mnt-"+name+"-")
}

func unmount(dir string) {
	if isMounted(dir) {
		if err := syscall.Unmount(dir, 0); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	}
}

// mountVhd mounts img with vhdmount (as a user would: it returns when live).
// The returned function unmounts it (vhdmount syncs the image first).
func mountVhd(c *config, img, name string, args ...string) (string, func(), error) {
	mnt, err := newMountpoint(c, name)
	if err != nil {
		return "", nil, err
	}
	done := func() { unmountWait(mnt); os.Remove(mnt) }
	if _, err := runOut(filepath.Join(c.bin, "vhdmount"), append(args, img, mnt)...); err != nil {
		os.Remove(mnt)
		return "", nil, err
	}
	return filepath.Join(mnt, "disk.raw"), done, nil
}

// unmountWait unmounts dir and waits (bounded) for its server to exit, so
// the image is synced and unlocked before the next step.
func unmountWait(dir string) {
	unmount(dir)
	deadline := time.Now().Add(10 * time.Second)
	for serverFor(dir) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// serverFor reports whether a process has dir on its command line.
func serverFor(dir string) bool {
	ms, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err == nil && strings.Contains(string(b), "\x00"+dir+"\x00") {
			return true
		}
	}
	return false
}

// mountCeiling serves raw through the minimal go-fuse server.
func mountCeiling(c *config, raw string) (string, func(), error) {
	return mountBenchServer(c, "ceiling", "serve-raw", raw)
}

// mountNull mounts the null server with a disk.raw of size bytes.
func mountNull(c *config, size int64) (string, func(), error) {
	return mountBenchServer(c, "null", "serve-null", fmt.Sprint(size))
}

// mountBenchServer runs this program's server sub (serve-raw or serve-null)
// with arg on a new mount point.
func mountBenchServer(c *config, name, sub, arg string) (string, func(), error) {
	mnt, err := newMountpoint(c, name)
	if err != nil {
		return "", nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self, sub, arg, mnt)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	done := func() {
		unmount(mnt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		os.Remove(mnt)
	}
	if err := waitMounted(mnt, exited); err != nil {
		done()
		return "", nil, err
	}
	return filepath.Join(mnt, "disk.raw"), done, nil
}

// vhdimountContender is libvhdi's vhdimount on img, mounted afresh for
// every run and unmounted after it: its FUSE file's page cache and its own
// block cache start empty each time, which dropping caches on a mount that
// stays up does not ensure. drop lists the files (the image) a cold run
// also drops; the new mount's disk file is added to it.
func vhdimountContender(name string, c *config, img string, drop ...string) contender {
	return contender{name, func() (target, error) {
		f, done, err := mountVhdimount(c, img)
		if err != nil {
			return target{}, err
		}
		return target{file: f, drop: append([]string{f}, drop...), slow: true, done: done}, nil
	}}
}

func mountVhdimount(c *config, img string) (string, func(), error) {
	mnt, err := newMountpoint(c, "vhdimount")
	if err != nil {
		return "", nil, err
	}
	done := func() { unmountWait(mnt); os.Remove(mnt) }
	if _, err := runOut("vhdimount", img, mnt); err != nil {
		os.Remove(mnt)
		return "", nil, err
	}
	if err := waitMounted(mnt, nil); err != nil {
		done()
		return "", nil, err
	}
	return filepath.Join(mnt, "vhdi1"), done, nil
}

// mountQsd exports img (driver vpc or vhdx) through qemu-storage-daemon's
// FUSE export, which mounts over a regular file. A VHD for it must come from
// qemu-img with force_size=on: --blockdev has no force_size_calc, so qemu
// sizes other VHDs (ours included) from their CHS geometry.
func mountQsd(c *config, img, driver string, writable bool) (string, func(), error) {
	dir, err := os.MkdirTemp(c.dir, "qsd-")
	if err != nil {
		return "", nil, err
	}
	exp, pid := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "pid")
	if err := os.WriteFile(exp, nil, 0o600); err != nil {
		return "", nil, err
	}
	fmtOpts := "driver=" + driver + ",node-name=d,file=f"
	w := "off"
	if writable {
		w = "on"
	}
	if _, err := runOut("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=f,filename="+img,
		"--blockdev", fmtOpts,
		"--export", "type=fuse,id=e,node-name=d,mountpoint="+exp+",writable="+w,
		"--daemonize", "--pidfile", pid); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	done := func() {
		unmount(exp)
		if b, err := os.ReadFile(pid); err == nil {
			if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 1 {
				syscall.Kill(p, syscall.SIGTERM)
				for i := 0; i < 500 && syscall.Kill(p, 0) == nil; i++ {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		os.RemoveAll(dir)
	}
	if err := waitMounted(exp, nil); err != nil {
		done()
		return "", nil, err
	}
	return exp, done, nil
}

// loopDev attaches file to a new loop device.
func loopDev(file string, ro, directIO bool) (string, func(), error) {
	args := []string{"--find", "--show"}
	if ro {
		args = append(args, "--read-only")
	}
	if directIO {
		args = append(args, "--direct-io=on")
	}
	out, err := runOut("losetup", append(args, file)...)
	if err != nil {
		return "", nil, err
	}
	dev := strings.TrimSpace(out)
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", nil, fmt.Errorf("losetup printed %q", out)
	}
	if directIO {
		if b, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/dio"); strings.TrimSpace(string(b)) != "1" {
			exec.Command("losetup", "-d", dev).Run()
			return "", nil, fmt.Errorf("the kernel did not enable direct I/O on %s over %s", dev, file)
		}
	}
	return dev, func() { exec.Command("losetup", "-d", dev).Run() }, nil
}

// ---- caches ----

// dropCache drops the page cache of each file (clean pages: the caller
// syncs first); a block device also has its buffers flushed.
func dropCache(files ...string) {
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, 4 /* POSIX_FADV_DONTNEED */, 0, 0)
		if strings.HasPrefix(name, "/dev/") {
			syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), 0x1261 /* BLKFLSBUF */, 0)
		}
		f.Close()
	}
}

// warm reads the first n bytes of file (all of it if n <= 0) into the page cache.
func warm(file string, n int64) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if n > 0 {
		r = io.LimitReader(f, n)
	}
	_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, make([]byte, 1<<20))
	return err
}

// cachedMiB reports how much of file sits in the page cache (fincore).
func cachedMiB(file string) (float64, error) {
	out, err := runOut("fincore", "--bytes", "--noheadings", "--output", "RES", file)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	return v / (1 << 20), err
}

// ---- fio ----

// fioJob runs fio and returns bytes/s and IOPS of the read or write side.
// fio's own cache invalidation is off: each workload decides what is cold.
func fioJob(file string, write bool, args ...string) (bw, iops float64, err error) {
	base := []string{"--name=b", "--filename=" + file, "--output-format=json", "--group_reporting",
		"--ioengine=psync", "--invalidate=0"}
	out, err := exec.Command("fio", append(base, args...)...).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("fio %v: %v", args, err)
	}
	// fio may print notes before the JSON.
	if i := strings.IndexByte(string(out), '{'); i > 0 {
		out = out[i:]
	}
	var r struct {
		Jobs []struct {
			Read, Write struct {
				BwBytes float64 `json:"bw_bytes"`
				Iops    float64 `json:"iops"`
			}
			Error int `json:"error"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Jobs) == 0 {
		return 0, 0, fmt.Errorf("fio output: %v", err)
	}
	j := r.Jobs[0]
	if j.Error != 0 {
		return 0, 0, fmt.Errorf("fio job error %d", j.Error)
	}
	if write {
		return j.Write.BwBytes, j.Write.Iops, nil
	}
	return j.Read.BwBytes, j.Read.Iops, nil
}

// ---- reads ----

// readWorkloads: sequential 1 MiB reads cold and warm, random 4 KiB
// buffered reads of a cached region, random 4 KiB O_DIRECT reads, against
// the raw file itself, a loop device over it, the ceiling, vhdmount (the
// dynamic VHD and the 4-deep chain), qemu-storage-daemon and vhdimount.
func readWorkloads(c *config, in *inputs, p peers, rep *report) error {
	var cs []contender
	add := func(name string, t target) { cs = append(cs, fixed(name, t)) }
	add("raw-file", target{file: in.raw, drop: []string{in.raw}})
	if dev, done, err := loopDev(in.raw, true, false); err != nil {
		rep.skip("loop", err.Error())
	} else {
		atExit(done)
		add("loop", target{file: dev, drop: []string{dev, in.raw}})
	}
	f, done, err := mountCeiling(c, in.raw)
	if err != nil {
		return fmt.Errorf("mounting the ceiling: %w", err)
	}
	atExit(done)
	add("ceiling", target{file: f, drop: []string{f, in.raw}})
	f, done, err = mountVhd(c, in.dyn, "dyn", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", in.dyn, err)
	}
	atExit(done)
	add("vhdmount", target{file: f, drop: []string{f, in.dyn}})
	f, done, err = mountVhd(c, in.chainTop, "chain", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", in.chainTop, err)
	}
	atExit(done)
	add("vhdmount-chain4", target{file: f, drop: append([]string{f}, in.chain...)})
	if p.qsd && in.qsdDyn != "" && !c.quick {
		if f, done, err := mountQsd(c, in.qsdDyn, "vpc", false); err != nil {
			rep.skip("qsd", err.Error())
		} else {
			atExit(done)
			add("qsd", target{file: f, drop: []string{f, in.qsdDyn}})
		}
	}
	if p.vhdimount && !c.quick {
		cs = append(cs, vhdimountContender("vhdimount", c, in.dyn, in.dyn))
	}
	rt := "--runtime=" + c.runtime
	seqSize := c.size / 2 // enough for steady state; the whole run stays near ten minutes
	seq := func(t target) []string {
		a := []string{"--rw=read", "--bs=1M", "--size=" + fmt.Sprint(seqSize)}
		if t.slow {
			// Until seqSize is read or the run time is up, whichever
			// comes first: never --time_based, which would loop over
			// the file and re-read what the first pass left in the
			// page cache.
			a = append(a, rt)
		}
		return a
	}
	mibs := func(t target, args []string) (float64, error) {
		bw, _, err := fioJob(t.file, false, args...)
		return bw / (1 << 20), err
	}
	iops := func(t target, args []string) (float64, error) {
		_, v, err := fioJob(t.file, false, args...)
		return v, err
	}
	// Cold: every file between the reader and the disk is dropped first.
	measure(c, rep, workload{"seqread-1M-cold", "MiB/s", true, cs, func(_ int, _ string, t target) (float64, error) {
		dropCache(t.drop...)
		return mibs(t, seq(t))
	}})
	// Warm: a first pass (not measured) fills the caches, then a new
	// process re-reads from a new open.
	measure(c, rep, workload{"seqread-1M-warm", "MiB/s", true, cs, func(_ int, _ string, t target) (float64, error) {
		n := seqSize
		if t.slow {
			n = 16 << 20 // vhdimount is far slower; its timed run reads little more
		}
		if err := warm(t.file, n); err != nil {
			return 0, err
		}
		return mibs(t, seq(t))
	}})
	region := c.size / 4
	var fast []contender
	for _, ct := range cs {
		if ct.name != "vhdimount" && ct.name != "vhdmount-chain4" {
			fast = append(fast, ct)
		}
	}
	measure(c, rep, workload{"randread-4k-cached", "IOPS", true, fast, func(_ int, _ string, t target) (float64, error) {
		if err := warm(t.file, region); err != nil {
			return 0, err
		}
		return iops(t, []string{"--rw=randread", "--bs=4k", "--size=" + fmt.Sprint(region), "--time_based", rt})
	}})
	// The null server answers each request with nothing behind it: the
	// FUSE round trip alone, the bound of any server on this library.
	direct := cs
	if f, done, err := mountNull(c, c.size); err != nil {
		rep.skip("null", err.Error())
	} else {
		atExit(done)
		direct = append(slices.Clip(cs), fixed("null", target{file: f, drop: []string{f}}))
	}
	measure(c, rep, workload{"randread-4k-direct", "IOPS", true, direct, func(_ int, _ string, t target) (float64, error) {
		return iops(t, []string{"--rw=randread", "--bs=4k", "--direct=1", "--size=" + fmt.Sprint(c.size), "--time_based", rt})
	}})
	return loopOnMount(c, in, rep)
}

// loopOnMount measures the double caching of a loop device over disk.raw:
// a cold sequential read of the loop device with buffered backing I/O (the
// default) and with direct I/O, and how much of disk.raw is left in the
// page cache after each.
func loopOnMount(c *config, in *inputs, rep *report) error {
	if !c.want("loop-on-mount") {
		return nil
	}
	f, done, err := mountVhd(c, in.dyn, "loopover", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", in.dyn, err)
	}
	atExit(done)
	var cs []contender
	for _, dio := range []bool{false, true} {
		name := "loop-buffered"
		if dio {
			name = "loop-dio"
		}
		dev, ldone, err := loopDev(f, true, dio)
		if err != nil {
			rep.skip("loop-on-mount/"+name, err.Error())
			continue
		}
		atExit(ldone)
		cs = append(cs, fixed(name, target{file: dev, drop: []string{dev, f, in.dyn}}))
	}
	measure(c, rep, workload{"loop-on-mount-seqread", "MiB/s", true, cs, func(r int, name string, t target) (float64, error) {
		dropCache(t.drop...)
		bw, _, err := fioJob(t.file, false, "--rw=read", "--bs=1M", "--size="+fmt.Sprint(c.size/2))
		if err != nil {
			return 0, err
		}
		m, err := cachedMiB(f)
		if err != nil {
			return 0, err
		}
		rep.add("loop-on-mount-cached", name, "MiB", r, m, false)
		return bw / (1 << 20), nil
	}})
	return nil
}

// ---- writes ----

// copyFile copies src to a new dst (sparse where src is, via cp) and
// fsyncs it, so its writeback does not land during the measurement.
func copyFile(src, dst string) error {
	if _, err := runOut("cp", "--sparse=always", src, dst); err != nil {
		return err
	}
	return fsyncFile(dst)
}

// fsyncFile makes name's data durable (and its pages clean, so they can be
// dropped).
func fsyncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeWorkloads: random 4 KiB O_DIRECT writes (one job) into an allocated
// disk and into a new one, and sequential 1 MiB writes into a new disk.
// Every run writes into a fresh target made the same way for every
// contender: a copy of the same bytes, or a new empty disk.
func writeWorkloads(c *config, in *inputs, p peers, rep *report) error {
	scratch := func(name string) string { return filepath.Join(c.dir, "w-"+name) }
	remove := func(files ...string) func() {
		return func() {
			for _, f := range files {
				os.Remove(f)
			}
		}
	}
	chain := func(fs ...func()) func() {
		return func() {
			for _, f := range fs {
				f()
			}
		}
	}
	// makeRaw makes a fresh raw target: a copy of the written raw file, or
	// a new sparse file of the dataset size.
	makeRaw := func(name string, allocated bool) (string, error) {
		f := scratch(name + ".raw")
		os.Remove(f)
		if allocated {
			return f, copyFile(in.wraw, f)
		}
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return "", err
		}
		return f, os.Truncate(f, c.size)
	}
	makeVhd := func(name string, allocated bool) (string, error) {
		f := scratch(name + ".vhd")
		os.Remove(f)
		if allocated {
			return f, copyFile(in.wvhd, f)
		}
		_, err := runOut(filepath.Join(c.bin, "vhd"), "create", f, fmt.Sprint(c.size))
		return f, err
	}
	contenders := func(allocated bool, withRawFile bool) []contender {
		var cs []contender
		if withRawFile && !c.quick {
			cs = append(cs, contender{"raw-file", func() (target, error) {
				f, err := makeRaw("rawfile", allocated)
				return target{file: f, done: remove(f)}, err
			}})
		}
		cs = append(cs, contender{"loop", func() (target, error) {
			f, err := makeRaw("loop", allocated)
			if err != nil {
				return target{}, err
			}
			dev, done, err := loopDev(f, false, false)
			if err != nil {
				os.Remove(f)
				return target{}, err
			}
			return target{file: dev, done: chain(done, remove(f))}, nil
		}})
		cs = append(cs, contender{"ceiling", func() (target, error) {
			f, err := makeRaw("ceiling", allocated)
			if err != nil {
				return target{}, err
			}
			file, done, err := mountCeiling(c, f)
			if err != nil {
				os.Remove(f)
				return target{}, err
			}
			return target{file: file, done: chain(done, remove(f))}, nil
		}})
		cs = append(cs, contender{"vhdmount", func() (target, error) {
			f, err := makeVhd("vhdmount", allocated)
			if err != nil {
				return target{}, err
			}
			file, done, err := mountVhd(c, f, "w")
			if err != nil {
				os.Remove(f)
				return target{}, err
			}
			return target{file: file, done: chain(done, remove(f))}, nil
		}})
		if withRawFile { // the random write rows: the FUSE round trip alone beside the ceiling
			cs = append(cs, contender{"null", func() (target, error) {
				file, done, err := mountNull(c, c.size)
				return target{file: file, done: done}, err
			}})
		}
		if p.qsd && in.qsdW != "" && withRawFile && !c.quick {
			cs = append(cs, contender{"qsd", func() (target, error) {
				f := scratch("qsd.vhd")
				os.Remove(f)
				var err error
				if allocated {
					err = copyFile(in.qsdW, f)
				} else {
					_, err = runOut("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", f, fmt.Sprint(c.size))
				}
				if err != nil {
					return target{}, err
				}
				file, done, err := mountQsd(c, f, "vpc", true)
				if err != nil {
					os.Remove(f)
					return target{}, err
				}
				return target{file: file, done: chain(done, remove(f))}, nil
			}})
		}
		return cs
	}
	rt := "--runtime=" + c.runtime
	// A random write run ends after ios writes or the run time, whichever
	// comes first: the teardown (vhdmount syncs the image at unmount; a raw
	// file written with O_DIRECT has one extent per write to free) grows
	// with the writes, and took most of the run when the runs were timed.
	ios := "--number_ios=4096"
	if c.quick {
		ios = "--number_ios=1024"
	}
	randWrite := func(size int64) func(_ int, _ string, t target) (float64, error) {
		return func(_ int, _ string, t target) (float64, error) {
			_, iops, err := fioJob(t.file, true, "--rw=randwrite", "--bs=4k", "--direct=1", "--numjobs=1",
				"--size="+fmt.Sprint(size), ios, rt)
			return iops, err
		}
	}
	wsize := fileSize(in.wraw)
	measure(c, rep, workload{"randwrite-4k-direct", "IOPS", true, contenders(true, true), randWrite(wsize)})
	measure(c, rep, workload{"randwrite-4k-direct-new", "IOPS", true, contenders(false, true), randWrite(c.size)})
	measure(c, rep, workload{"seqwrite-1M-new", "MiB/s", true, contenders(false, false), func(_ int, _ string, t target) (float64, error) {
		bw, _, err := fioJob(t.file, true, "--rw=write", "--bs=1M", "--size="+fmt.Sprint(c.size/2), "--end_fsync=1")
		return bw / (1 << 20), err
	}})
	return nil
}

func fileSize(name string) int64 {
	fi, err := os.Stat(name)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// ---- conversion and open ----

// convertWorkloads: vhd convert -O raw of the dynamic disk and of the chain,
// against qemu-img convert of the dynamic disk. Seconds, lower is better.
func convertWorkloads(c *config, in *inputs, p peers, rep *report) {
	out := filepath.Join(c.dir, "convert-out.raw")
	vhd := filepath.Join(c.bin, "vhd")
	cmd := func(name string, argv ...string) contender {
		return contender{name, func() (target, error) {
			os.Remove(out)
			return target{file: joinArgv(argv), done: func() { os.Remove(out) }}, nil
		}}
	}
	cs := []contender{
		cmd("vhd", vhd, "convert", "-O", "raw", in.dyn, out),
		cmd("vhd-chain4", vhd, "convert", "-O", "raw", in.chainTop, out),
	}
	if p.qemu {
		cs = append(cs, cmd("qemu-img", "qemu-img", "convert", "--image-opts",
			"driver=vpc,force_size_calc=current_size,file.filename="+in.dyn, "-O", "raw", out))
	}
	measure(c, rep, workload{"convert-raw", "s", false, cs, timeCmd})
}

// joinArgv packs a command line into a target's file for timeCmd.
func joinArgv(argv []string) string { return strings.Join(argv, "\x00") }

// timeCmd runs the NUL-separated command line t.file and returns seconds.
func timeCmd(_ int, _ string, t target) (float64, error) {
	argv := strings.Split(t.file, "\x00")
	t0 := time.Now()
	if o, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%v: %v: %s", argv, err, o)
	}
	return time.Since(t0).Seconds(), nil
}

// openWorkloads: wall time and peak RSS of `vhd info` on the empty 2 TiB disk
// and on the chain (open, walk the BAT, print).
func openWorkloads(c *config, imgs []struct{ name, img string }, rep *report) error {
	vhd := filepath.Join(c.bin, "vhd")
	if !c.want("open") {
		return nil
	}
	fmt.Print("open:")
	for r := 0; r < c.reps; r++ {
		for i := range imgs {
			x := imgs[(i+r)%len(imgs)]
			cmd := exec.Command(vhd, "info", x.img)
			t0 := time.Now()
			if o, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("vhd info: %v: %s", err, o)
			}
			el := time.Since(t0)
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			rep.add("open-ms", x.name, "ms", r, float64(el.Microseconds())/1000, false)
			rep.add("open-peak-rss", x.name, "MiB", r, float64(ru.Maxrss)/1024, false)
			fmt.Print(".")
		}
	}
	fmt.Println()
	return nil
}
