package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vhdmount/vhdmount/format"
)

// vhdxRows names the rows of issue #9 that need VHDX reading.
const vhdxRows = "seqread-1M-vhdx, convert-raw-vhdx, open of an empty 64 TiB VHDX"

// vhdxWorkloads are issue #9's speed rows: sequential 1 MiB reads of a
// dynamic VHDX through the mount against the same data as a dynamic VHD and
// against vhdimount on the VHDX, `vhd convert -O raw` of it against
// qemu-img, and opening an empty 64 TiB dynamic VHDX (added to opens). The
// inputs come from qemu-img. While format.Open refuses VHDX, every row is
// skipped with the reason printed. The 4-deep AVHDX chain row is
// avhdxChainWorkload (vhd makes the chain: qemu-img cannot).
func vhdxWorkloads(c *config, in *inputs, p peers, rep *report, opens *[]struct{ name, img string }) error {
	if !c.want("vhdx") && !c.want("open") {
		return nil
	}
	if !p.qemu {
		rep.skip(vhdxRows, "qemu-img, which makes the VHDX inputs, is not installed")
		return nil
	}
	empty := filepath.Join(c.dir, "empty64t.vhdx")
	if _, err := runOut("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic", empty, "64T"); err != nil {
		rep.skip(vhdxRows, err.Error())
		return nil
	}
	d, err := format.Open(empty, &format.Options{ReadOnly: true})
	if err != nil {
		rep.skip(vhdxRows, "format.Open does not read VHDX yet: "+err.Error())
		os.Remove(empty)
		return nil
	}
	d.Close()
	*opens = append(*opens, struct{ name, img string }{"empty-64TiB-vhdx", empty})
	if !c.want("vhdx") {
		return nil
	}
	vhdx := filepath.Join(c.dir, "dyn.vhdx")
	if _, err := runOut("qemu-img", "convert", "-O", "vhdx", "-o", "subformat=dynamic", in.raw, vhdx); err != nil {
		return err
	}
	defer os.Remove(vhdx)
	var cs []contender
	f, done, err := mountVhd(c, vhdx, "vhdx", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", vhdx, err)
	}
	atExit(done)
	cs = append(cs, fixed("vhdmount-vhdx", target{file: f, drop: []string{f}}))
	f, done, err = mountVhd(c, in.dyn, "dyn", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", in.dyn, err)
	}
	atExit(done)
	cs = append(cs, fixed("vhdmount", target{file: f, drop: []string{f}}))
	if p.vhdimount {
		cs = append(cs, vhdimountContender("vhdimount-vhdx", c, vhdx))
	}
	// The minimal go-fuse server over the same data as a raw file (in the
	// page cache too): what a FUSE server can do here at all, which bounds
	// any ratio to vhdimount.
	f, done, err = mountCeiling(c, in.raw)
	if err != nil {
		return fmt.Errorf("mounting the ceiling: %w", err)
	}
	atExit(done)
	cs = append(cs, fixed("ceiling", target{file: f, drop: []string{f}}))
	// The images stay in the page cache; disk.raw's is dropped: this
	// measures the servers, as #9 asks.
	measure(c, rep, workload{"seqread-1M-vhdx", "MiB/s", true, cs, func(_ int, _ string, t target) (float64, error) {
		dropCache(t.drop...)
		args := []string{"--rw=read", "--bs=1M", "--size=" + fmt.Sprint(c.size)}
		if t.slow {
			// Bounded by size and time, never --time_based (see seq in
			// readWorkloads).
			args = append(args, "--runtime="+c.runtime)
		}
		bw, _, err := fioJob(t.file, false, args...)
		return bw / (1 << 20), err
	}})
	runCleanups()
	out := filepath.Join(c.dir, "convert-out.raw")
	cmd := func(name string, argv ...string) contender {
		return contender{name, func() (target, error) {
			os.Remove(out)
			return target{file: joinArgv(argv), done: func() { os.Remove(out) }}, nil
		}}
	}
	measure(c, rep, workload{"convert-raw-vhdx", "s", false, []contender{
		cmd("vhd-vhdx", filepath.Join(c.bin, "vhd"), "convert", "-O", "raw", vhdx, out),
		cmd("qemu-img-vhdx", "qemu-img", "convert", "-f", "vhdx", "-O", "raw", vhdx, out),
	}, timeCmd})
	return nil
}
