package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// contender is one thing that serves a file to measure.
type contender struct {
	name string
	file string // the file fio uses
}

// peers says which optional peers are installed.
type peers struct {
	vhdimount, qemu bool
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
	return p
}

func newMountpoint(c *config, name string) (string, error) {
	d, err := os.MkdirTemp(c.dir, "mnt-"+name+"-")
	if err != nil {
		return "", err
	}
	mounted = append(mounted, d)
	return d, nil
}

// mountVhd mounts img with vhdmount (as a user would: it returns when live).
func mountVhd(c *config, img, name string, args ...string) (string, error) {
	mnt, err := newMountpoint(c, name)
	if err != nil {
		return "", err
	}
	if _, err := runOut(filepath.Join(c.bin, "vhdmount"), append(args, img, mnt)...); err != nil {
		return "", err
	}
	return filepath.Join(mnt, "disk.raw"), nil
}

// mountCeiling serves raw through the minimal go-fuse server.
func mountCeiling(c *config, raw string) (string, error) {
	mnt, err := newMountpoint(c, "ceiling")
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(self, "serve-raw", raw, mnt)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go cmd.Wait()
	if err := waitMounted(mnt, cmd); err != nil {
		return "", err
	}
	return filepath.Join(mnt, "disk.raw"), nil
}

func mountVhdimount(c *config, img string) (string, error) {
	mnt, err := newMountpoint(c, "vhdimount")
	if err != nil {
		return "", err
	}
	if _, err := runOut("vhdimount", img, mnt); err != nil {
		return "", err
	}
	if err := waitMounted(mnt, nil); err != nil {
		return "", err
	}
	return filepath.Join(mnt, "vhdi1"), nil
}

func unmountFile(file string) {
	dir := filepath.Dir(file)
	if err := syscall.Unmount(dir, 0); err != nil {
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	// Let the server finish syncing before the next measurement.
	time.Sleep(200 * time.Millisecond)
}

// fioJob runs fio and returns bytes/s and IOPS of the read or write side.
func fioJob(file string, write bool, args ...string) (bw, iops float64, err error) {
	base := []string{"--name=b", "--filename=" + file, "--output-format=json", "--group_reporting", "--ioengine=psync"}
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

// readWorkloads: sequential 1 MiB reads and random 4 KiB O_DIRECT reads
// (1 and 2 jobs) against vhdmount (dynamic and the chain), vhdimount and the
// ceiling, alternating contenders within each repetition.
func readWorkloads(c *config, in *inputs, p peers, rep *report) error {
	var cs []contender
	add := func(name, file string, err error) error {
		if err != nil {
			return fmt.Errorf("mounting %s: %w", name, err)
		}
		cs = append(cs, contender{name, file})
		return nil
	}
	f, err := mountCeiling(c, in.raw)
	if err := add("ceiling", f, err); err != nil {
		return err
	}
	f, err = mountVhd(c, in.dyn, "dyn", "--ro")
	if err := add("vhdmount", f, err); err != nil {
		return err
	}
	f, err = mountVhd(c, in.chainTop, "chain", "--ro")
	if err := add("vhdmount-chain4", f, err); err != nil {
		return err
	}
	if p.vhdimount {
		f, err = mountVhdimount(c, in.dyn)
		if err := add("vhdimount", f, err); err != nil {
			return err
		}
	}
	type wl struct {
		name, unit string
		args       []string
		iops       bool
	}
	rt := fmt.Sprint(c.runtime)
	wls := []wl{
		{"seqread-1M", "MiB/s", []string{"--rw=read", "--bs=1M"}, false},
		{"randread-4k-direct-1job", "IOPS", []string{"--rw=randread", "--bs=4k", "--direct=1", "--numjobs=1", "--time_based", "--runtime=" + rt}, true},
		{"randread-4k-direct-2jobs", "IOPS", []string{"--rw=randread", "--bs=4k", "--direct=1", "--numjobs=2", "--time_based", "--runtime=" + rt}, true},
	}
	for _, w := range wls {
		if !c.want(w.name) {
			continue
		}
		fmt.Printf("%s:", w.name)
		for r := 0; r < c.reps; r++ {
			for _, ct := range cs {
				if ct.name == "vhdimount" && w.name == "seqread-1M" && r > 0 && c.quick {
					continue // it is slow; one run is enough for a quick ratio
				}
				syscall.Sync() // no writeback from earlier steps during the run
				dropCache(ct.file)
				args := w.args
				if ct.name == "vhdimount" && !w.iops {
					// vhdimount is far slower; bound its sequential run by time.
					args = append(args, "--time_based", "--runtime="+rt)
				}
				bw, iops, err := fioJob(ct.file, false, args...)
				if err != nil {
					rep.skip(w.name+"/"+ct.name, err.Error())
					continue
				}
				v := bw / (1 << 20)
				if w.iops {
					v = iops
				}
				rep.add(w.name, ct.name, w.unit, v, true)
				fmt.Print(".")
			}
		}
		fmt.Println()
	}
	for _, ct := range cs {
		unmountFile(ct.file)
	}
	return nil
}

// writeWorkloads: sequential 1 MiB writes into an empty dynamic disk (a new
// one each repetition) and random 4 KiB O_DIRECT writes with 2 jobs into an
// allocated one, against the ceiling writing into a raw file.
func writeWorkloads(c *config, in *inputs, rep *report) error {
	size := fmt.Sprint(c.size)
	if c.want("seqwrite-1M-empty") {
		fmt.Print("seqwrite-1M-empty:")
	}
	for r := 0; r < c.reps && c.want("seqwrite-1M-empty"); r++ {
		for _, name := range []string{"ceiling", "vhdmount"} {
			var file string
			var err error
			if name == "ceiling" {
				raw := filepath.Join(c.dir, "w.raw")
				os.Remove(raw)
				if err := os.WriteFile(raw, nil, 0o644); err != nil {
					return err
				}
				os.Truncate(raw, c.size)
				file, err = mountCeiling(c, raw)
			} else {
				img := filepath.Join(c.dir, "w.vhd")
				os.Remove(img)
				if _, err := runOut(filepath.Join(c.bin, "vhd"), "create", img, size); err != nil {
					return err
				}
				file, err = mountVhd(c, img, "w")
			}
			if err != nil {
				return err
			}
			syscall.Sync()
			bw, _, err := fioJob(file, true, "--rw=write", "--bs=1M", "--size="+size, "--end_fsync=1")
			unmountFile(file)
			if err != nil {
				rep.skip("seqwrite-1M-empty/"+name, err.Error())
				continue
			}
			rep.add("seqwrite-1M-empty", name, "MiB/s", bw/(1<<20), true)
			fmt.Print(".")
		}
	}
	if !c.want("randwrite-4k-direct-2jobs") {
		return nil
	}
	fmt.Println()
	fmt.Print("randwrite-4k-direct-2jobs:")
	ceil, err := mountCeiling(c, in.raw)
	if err != nil {
		return err
	}
	ours, err := mountVhd(c, in.dyn, "rw")
	if err != nil {
		return err
	}
	for r := 0; r < c.reps; r++ {
		for _, ct := range []contender{{"ceiling", ceil}, {"vhdmount", ours}} {
			syscall.Sync()
			_, iops, err := fioJob(ct.file, true, "--rw=randwrite", "--bs=4k", "--direct=1", "--numjobs=2",
				"--time_based", "--runtime="+fmt.Sprint(c.runtime), "--size="+size)
			if err != nil {
				rep.skip("randwrite-4k-direct-2jobs/"+ct.name, err.Error())
				continue
			}
			rep.add("randwrite-4k-direct-2jobs", ct.name, "IOPS", iops, true)
			fmt.Print(".")
		}
	}
	fmt.Println()
	unmountFile(ceil)
	unmountFile(ours)
	return nil
}

// convertWorkloads: vhd convert -O raw of the dynamic disk and of the chain,
// against qemu-img convert of the dynamic disk. Seconds, lower is better.
func convertWorkloads(c *config, in *inputs, p peers, rep *report) error {
	out := filepath.Join(c.dir, "convert-out.raw")
	vhd := filepath.Join(c.bin, "vhd")
	type ct struct {
		name string
		cmd  []string
	}
	cs := []ct{
		{"vhd", []string{vhd, "convert", "-O", "raw", in.dyn, out}},
		{"vhd-chain4", []string{vhd, "convert", "-O", "raw", in.chainTop, out}},
	}
	if p.qemu {
		cs = append(cs, ct{"qemu-img", []string{"qemu-img", "convert", "--image-opts",
			"driver=vpc,force_size_calc=current_size,file.filename=" + in.dyn, "-O", "raw", out}})
	}
	if !c.want("convert-raw") {
		return nil
	}
	fmt.Print("convert-raw:")
	for r := 0; r < c.reps; r++ {
		for _, x := range cs {
			os.Remove(out)
			syscall.Sync() // start each run without the previous run's dirty pages
			t0 := time.Now()
			if o, err := exec.Command(x.cmd[0], x.cmd[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %v: %s", x.cmd, err, o)
			}
			rep.add("convert-raw", x.name, "s", time.Since(t0).Seconds(), false)
			fmt.Print(".")
		}
	}
	os.Remove(out)
	fmt.Println()
	return nil
}

// openWorkloads: wall time and peak RSS of `vhd info` on the empty 2 TiB disk
// and on the chain (open, walk the BAT, print).
func openWorkloads(c *config, in *inputs, rep *report) error {
	vhd := filepath.Join(c.bin, "vhd")
	if !c.want("open") {
		return nil
	}
	fmt.Print("open:")
	for r := 0; r < c.reps; r++ {
		for _, x := range []struct{ name, img string }{{"empty-2040GiB", in.empty2T}, {"chain4", in.chainTop}} {
			cmd := exec.Command(vhd, "info", x.img)
			t0 := time.Now()
			if o, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("vhd info: %v: %s", err, o)
			}
			el := time.Since(t0)
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			rep.add("open-ms", x.name, "ms", float64(el.Microseconds())/1000, false)
			rep.add("open-peak-rss", x.name, "MiB", float64(ru.Maxrss)/1024, false)
			fmt.Print(".")
		}
	}
	fmt.Println()
	return nil
}
