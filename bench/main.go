// Command bench measures vhdmount against the real limits on this machine,
// side by side in one run: the raw file itself (page cache warm, and cold),
// a kernel loop device over it, a minimal go-fuse server exposing it (the
// FUSE ceiling), qemu-storage-daemon's FUSE export, libvhdi's vhdimount, and
// qemu-img for conversion. Contenders interleave, their order rotated each
// repetition; ratios are taken pair by pair within a repetition and reported
// as median [min-max], as a table on stdout and as bench.json. See
// docs/performance.md.
//
//	go run ./bench [-quick] [-reps N] [-dir DIR] [-json bench.json]
//	go run ./bench serve-raw FILE MOUNTPOINT   (the ceiling server, used internally)
//	go run ./bench serve-null SIZE MOUNTPOINT  (the null server, used internally)
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/mountinfo"
)

type config struct {
	quick   bool
	reps    int
	dir     string
	out     string
	size    int64  // dataset size
	runtime string // duration of a time-based fio run (fio's syntax)
	bin     string
	only    string
	verbose bool
}

// want reports whether workload name is selected by -only (a
// comma-separated list of substrings, any of which selects).
func (c *config) want(name string) bool {
	if c.only == "" {
		return true
	}
	for _, o := range strings.Split(c.only, ",") {
		if o != "" && strings.Contains(name, o) {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "serve-raw" {
		if err := serveRaw(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "serve-raw:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "serve-null" {
		size, err := strconv.ParseInt(os.Args[2], 10, 64)
		if err == nil {
			err = serveNull(size, os.Args[3])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "serve-null:", err)
			os.Exit(1)
		}
		return
	}
	c := &config{}
	flag.BoolVar(&c.quick, "quick", false, "a subset that runs in about a minute (smaller data, shorter runs, fewer repetitions and peers)")
	flag.IntVar(&c.reps, "reps", 0, "repetitions of each measurement (default 5, 3 with -quick)")
	flag.StringVar(&c.dir, "dir", "", "work directory for the inputs (default: a new one under /var/tmp)")
	flag.StringVar(&c.out, "json", "bench.json", "where to write the JSON report")
	flag.StringVar(&c.bin, "bin", "bin", "directory with the built vhd and vhdmount")
	flag.StringVar(&c.only, "only", "", "run only the workloads whose name contains this, or any of a comma-separated list (e.g. seqread, write, convert, open)")
	flag.BoolVar(&c.verbose, "v", false, "print how long each run's setup, measurement and teardown took")
	flag.Parse()
	c.size, c.runtime = 1<<30, "2s"
	if c.reps == 0 {
		c.reps = 5
	}
	if c.quick {
		c.size, c.runtime = 128<<20, "500ms"
		if c.reps == 5 {
			c.reps = 3
		}
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c *config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (FUSE mounts, loop devices, dropping caches)")
	}
	var err error
	if c.bin, err = filepath.Abs(c.bin); err != nil {
		return err
	}
	for _, b := range []string{"vhd", "vhdmount"} {
		if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
			return fmt.Errorf("%s/%s not built (run make build): %v", c.bin, b, err)
		}
	}
	for _, t := range []string{"fio", "losetup", "fincore"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install fio util-linux)", t)
		}
	}
	removeDir := func() {}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("/var/tmp", "vhdmount-bench-"); err != nil {
			return err
		}
		dir := c.dir
		removeDir = func() { os.RemoveAll(dir) }
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		runCleanups()
		removeDir()
		os.Exit(130)
	}()
	defer removeDir()
	defer runCleanups()

	start := time.Now()
	rep := &report{Date: start.UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Kernel: kernel(), Quick: c.quick,
		Reps: c.reps, DatasetBytes: c.size, CPUModel: cpuModel()}
	fmt.Printf("vhdmount bench: %d CPUs, kernel %s, %s dataset, %d repetitions\n", rep.CPUs, rep.Kernel, human(c.size), c.reps)
	in, err := makeInputs(c)
	if err != nil {
		return err
	}
	fmt.Printf("inputs ready in %.1fs\n", time.Since(start).Seconds())
	peers := checkPeers(rep)
	if c.quick {
		rep.skip("qsd, vhdimount, and the raw file in write workloads", "left out of -quick to keep it short; make bench runs them")
	}
	if err := readWorkloads(c, in, peers, rep); err != nil {
		return err
	}
	runCleanups() // the read mounts and loop devices
	if err := writeWorkloads(c, in, peers, rep); err != nil {
		return err
	}
	convertWorkloads(c, in, peers, rep)
	convertVHDXWorkloads(c, in, peers, rep)
	opens := []struct{ name, img string }{{"empty-2040GiB", in.empty2T}, {"chain4", in.chainTop}}
	if err := vhdxWorkloads(c, in, peers, rep, &opens); err != nil {
		return err
	}
	if err := vhdxWriteWorkloads(c, in, rep); err != nil {
		return err
	}
	if err := avhdxChainWorkload(c, in, rep); err != nil {
		return err
	}
	if err := openWorkloads(c, opens, rep); err != nil {
		return err
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.print(os.Stdout)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(c.out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s; total %.0fs\n", c.out, rep.Seconds)
	return nil
}

// inputs are the files every workload uses.
type inputs struct {
	raw, dyn, chainTop, empty2T string
	chain                       []string // base first, top last
	wraw, wvhd                  string   // write targets' source: a quarter of raw, and as a dynamic VHD
	qsdDyn, qsdW                string   // dyn and wvhd as qemu-img makes them, for qemu-storage-daemon ("" without qemu-img)
}

// makeInputs writes the random dataset as raw and dynamic, a 4-deep
// differencing chain (base plus four children) with the same flat content,
// an empty 2 TiB dynamic disk, and the source of the write targets.
func makeInputs(c *config) (*inputs, error) {
	in := &inputs{
		raw: filepath.Join(c.dir, "data.raw"), dyn: filepath.Join(c.dir, "dyn.vhd"),
		empty2T: filepath.Join(c.dir, "empty2t.vhd"),
		wraw:    filepath.Join(c.dir, "wsrc.raw"), wvhd: filepath.Join(c.dir, "wsrc.vhd"),
	}
	f, err := os.Create(in.raw)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	buf := make([]byte, 4<<20)
	for off := int64(0); off < c.size; off += int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
	}
	f.Close()
	if err := copyPrefix(in.raw, in.wraw, c.size/4); err != nil {
		return nil, err
	}
	vhd := filepath.Join(c.bin, "vhd")
	for _, a := range [][]string{
		{"convert", "-O", "dynamic", in.raw, in.dyn},
		{"convert", "-O", "dynamic", in.wraw, in.wvhd},
		{"create", in.empty2T, "2040G"}, // the largest VHD the spec allows, ~2 TiB
	} {
		if out, err := exec.Command(vhd, a...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("vhd %v: %v: %s", a, err, out)
		}
	}
	// The chain: base = a copy of dyn.vhd; child k (1..4) rewrites, in every
	// block, the k-th 512 KiB quarter's middle 256 KiB plus scattered 4 KiB
	// runs with the raw file's own bytes, so the flat content stays equal to
	// data.raw while reads draw on every layer.
	base := filepath.Join(c.dir, "chain0.vhd")
	if out, err := exec.Command("cp", "--sparse=always", in.dyn, base).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cp: %v: %s", err, out)
	}
	in.chain = []string{base}
	src, err := os.Open(in.raw)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	prev := base
	for k := 1; k <= 4; k++ {
		child := filepath.Join(c.dir, fmt.Sprintf("chain%d.vhd", k))
		if err := format.Create(child, format.CreateOptions{Parent: prev}); err != nil {
			return nil, err
		}
		d, err := format.Open(child, nil)
		if err != nil {
			return nil, err
		}
		const bs = 2 << 20
		for blk := int64(0); blk < c.size/bs; blk++ {
			for _, r := range [][2]int64{{int64(k-1)*(512<<10) + 128<<10, 256 << 10}, {int64(rng.IntN(500)) * 4096, 4096}} {
				off := blk*bs + r[0]
				p := buf[:r[1]]
				if _, err := src.ReadAt(p, off); err != nil {
					return nil, err
				}
				if _, err := d.WriteAt(p, off); err != nil {
					return nil, err
				}
			}
		}
		if err := d.Close(); err != nil {
			return nil, err
		}
		in.chain = append(in.chain, child)
		prev = child
	}
	in.chainTop = prev
	if _, err := exec.LookPath("qemu-img"); err == nil {
		in.qsdDyn, in.qsdW = filepath.Join(c.dir, "qsd-dyn.vhd"), filepath.Join(c.dir, "qsd-wsrc.vhd")
		for _, a := range [][2]string{{in.raw, in.qsdDyn}, {in.wraw, in.qsdW}} {
			if _, err := runOut("qemu-img", "convert", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", a[0], a[1]); err != nil {
				return nil, err
			}
		}
	}
	// Written once and durable: no writeback of the inputs during a run,
	// and their pages are clean, so a cold run can drop them.
	for _, f := range append([]string{in.raw, in.dyn, in.wraw, in.wvhd, in.empty2T, in.qsdDyn, in.qsdW}, in.chain...) {
		if f == "" {
			continue
		}
		if err := fsyncFile(f); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// copyPrefix writes the first n bytes of src to a new file dst.
func copyPrefix(src, dst string, n int64) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(d, s, n); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.0f GiB", float64(n)/(1<<30))
	default:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func isMounted(dir string) bool {
	_, ok, _ := mountinfo.Lookup(dir)
	return ok
}

// waitMounted polls mountinfo (bounded) until dir is a mount point; exited,
// if not nil, is closed when the server has exited.
func waitMounted(dir string, exited <-chan struct{}) error {
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(dir) {
		select {
		case <-exited:
			return fmt.Errorf("server for %s exited", dir)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not mounted after 20s", dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func runOut(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}
