package main

import (
	"os"
	"path/filepath"
)

// convertVHDXWorkloads: vhd convert -O vhdx of the raw dataset against
// qemu-img convert -O vhdx (dynamic, its defaults) of the same file.
// Seconds, lower is better; the output is removed after every run.
func convertVHDXWorkloads(c *config, in *inputs, p peers, rep *report) {
	out := filepath.Join(c.dir, "convert-out.vhdx")
	vhd := filepath.Join(c.bin, "vhd")
	cmd := func(name string, argv ...string) contender {
		return contender{name, func() (target, error) {
			os.Remove(out)
			return target{file: joinArgv(argv), done: func() { os.Remove(out) }}, nil
		}}
	}
	cs := []contender{cmd("vhd", vhd, "convert", "-f", "raw", "-O", "vhdx", in.raw, out)}
	if p.qemu {
		cs = append(cs, cmd("qemu-img", "qemu-img", "convert", "-f", "raw", "-O", "vhdx", in.raw, out))
	}
	measure(c, rep, workload{"convert-vhdx", "s", false, cs, timeCmd})
}
