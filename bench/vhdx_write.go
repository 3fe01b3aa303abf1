package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/vhdmount/vhdmount/format"
)

// vhdxWriteWorkloads are issue #10's write rows, each run into a fresh
// target made the same way for every contender and removed after it:
//
//   - randwrite-4k-direct-new-child-vhdx: random 4 KiB O_DIRECT writes
//     (as randwrite-4k-direct-new) into a new AVHDX child against a new VHD
//     child, over parents with the same data (the dataset as a dynamic VHD
//     and as a dynamic VHDX);
//   - seqwrite-1M-new-vhdx: sequential 1 MiB writes (as seqwrite-1M-new)
//     into a new dynamic VHDX against a new dynamic VHD.
//
// The compared contenders have equal block sizes (2 MiB, the VHD default);
// the "-32M" contenders use the VHDX default block size (not with -quick).
func vhdxWriteWorkloads(c *config, in *inputs, rep *report) error {
	const (
		rwName = "randwrite-4k-direct-new-child-vhdx"
		swName = "seqwrite-1M-new-vhdx"
	)
	if !c.want(rwName) && !c.want(swName) {
		return nil
	}
	vhd := filepath.Join(c.bin, "vhd")
	sizes := []string{"2M"}
	if !c.quick {
		sizes = append(sizes, "32M")
	}
	// The parents of the children: the dataset as a dynamic VHDX per block size.
	parents := map[string]string{}
	if c.want(rwName) {
		for _, bs := range sizes {
			p := filepath.Join(c.dir, "wparent-"+bs+".vhdx")
			if _, err := runOut(vhd, "convert", "-f", "raw", "-O", "vhdx", "--block-size", bs, in.raw, p); err != nil {
				return err
			}
			if err := fsyncFile(p); err != nil {
				return err
			}
			defer os.Remove(p)
			parents[bs] = p
		}
	}
	// mounted makes a fresh image img with `vhd create args... img
	// [size]`, mounts it read-write, and removes it after the run.
	mounted := func(name, img, size string, args ...string) contender {
		argv := append(append([]string{"create"}, args...), img)
		if size != "" {
			argv = append(argv, size)
		}
		return contender{name, func() (target, error) {
			os.Remove(img)
			if _, err := runOut(vhd, argv...); err != nil {
				return target{}, err
			}
			file, done, err := mountVhd(c, img, "wx")
			if err != nil {
				os.Remove(img)
				return target{}, err
			}
			return target{file: file, done: func() { done(); os.Remove(img) }}, nil
		}}
	}
	scratch := func(name string) string { return filepath.Join(c.dir, "wx-"+name) }

	rt := "--runtime=" + c.runtime
	ios := "--number_ios=4096"
	if c.quick {
		ios = "--number_ios=1024"
	}
	cs := []contender{mounted("vhdmount-vhd-child", scratch("child.vhd"), "", "--parent", in.dyn)}
	for _, bs := range sizes {
		name := "vhdmount-avhdx"
		if bs != "2M" {
			name += "-" + bs
		}
		cs = append(cs, mounted(name, scratch("child-"+bs+".avhdx"), "", "--parent", parents[bs]))
	}
	measure(c, rep, workload{rwName, "IOPS", true, cs, func(_ int, _ string, t target) (float64, error) {
		_, iops, err := fioJob(t.file, true, "--rw=randwrite", "--bs=4k", "--direct=1", "--numjobs=1",
			"--size="+fmt.Sprint(c.size), ios, rt)
		return iops, err
	}})

	size := fmt.Sprint(c.size)
	cs = []contender{mounted("vhdmount-vhd", scratch("new.vhd"), size, "--format", "vhd")}
	for _, bs := range sizes {
		name := "vhdmount-vhdx"
		if bs != "2M" {
			name += "-" + bs
		}
		cs = append(cs, mounted(name, scratch("new-"+bs+".vhdx"), size, "--format", "vhdx", "--block-size", bs))
	}
	measure(c, rep, workload{swName, "MiB/s", true, cs, func(_ int, _ string, t target) (float64, error) {
		bw, _, err := fioJob(t.file, true, "--rw=write", "--bs=1M", "--size="+fmt.Sprint(c.size/2), "--end_fsync=1")
		return bw / (1 << 20), err
	}})
	return nil
}

// avhdxChainWorkload is issue #9's chain row: cold sequential 1 MiB reads
// of a 4-deep AVHDX chain against its base alone, which has the same flat
// content, and the VHD chain4 against the dynamic VHD beside them (the same
// row as seqread-1M-cold's, in the same run). The base is the dataset as a dynamic VHDX (`vhd convert`, the
// default 32 MiB blocks); each child is made by `vhd create --parent` and
// written through package format like the VHD chain's: child k rewrites,
// in every 2 MiB, the k-th 512 KiB quarter's middle 256 KiB and a
// scattered 4 KiB run with the dataset's own bytes.
func avhdxChainWorkload(c *config, in *inputs, rep *report) error {
	const name = "seqread-1M-cold-avhdx-chain4"
	if !c.want(name) {
		return nil
	}
	vhd := filepath.Join(c.bin, "vhd")
	base := filepath.Join(c.dir, "chainx0.vhdx")
	if _, err := runOut(vhd, "convert", "-f", "raw", "-O", "vhdx", in.raw, base); err != nil {
		return err
	}
	files := []string{base}
	defer func() {
		for _, f := range files {
			os.Remove(f)
		}
	}()
	src, err := os.Open(in.raw)
	if err != nil {
		return err
	}
	defer src.Close()
	rng := rand.New(rand.NewChaCha8([32]byte{4, 5, 6}))
	buf := make([]byte, 256<<10)
	prev := base
	for k := 1; k <= 4; k++ {
		child := filepath.Join(c.dir, fmt.Sprintf("chainx%d.avhdx", k))
		if _, err := runOut(vhd, "create", "--parent", prev, child); err != nil {
			return err
		}
		files = append(files, child)
		d, err := format.Open(child, nil)
		if err != nil {
			return err
		}
		const bs = 2 << 20
		for blk := int64(0); blk < c.size/bs; blk++ {
			for _, r := range [][2]int64{{int64(k-1)*(512<<10) + 128<<10, 256 << 10}, {int64(rng.IntN(500)) * 4096, 4096}} {
				off := blk*bs + r[0]
				p := buf[:r[1]]
				if _, err := src.ReadAt(p, off); err != nil {
					d.Close()
					return err
				}
				if _, err := d.WriteAt(p, off); err != nil {
					d.Close()
					return fmt.Errorf("writing %s at %d: %w", child, off, err)
				}
			}
		}
		if err := d.Close(); err != nil {
			return err
		}
		prev = child
	}
	for _, f := range files {
		if err := fsyncFile(f); err != nil {
			return err
		}
	}
	f, done, err := mountVhd(c, base, "xbase", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", base, err)
	}
	atExit(done)
	cs := []contender{fixed("vhdmount-vhdx", target{file: f, drop: []string{f, base}})}
	f, done, err = mountVhd(c, prev, "xchain", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", prev, err)
	}
	atExit(done)
	cs = append(cs, fixed("vhdmount-avhdx-chain4", target{file: f, drop: append([]string{f}, files...)}))
	top := f
	// The VHD chain and its single layer beside them, in the same run, so
	// that the AVHDX chain's cost can be told from a chain's.
	f, done, err = mountVhd(c, in.dyn, "dyn", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", in.dyn, err)
	}
	atExit(done)
	cs = append(cs, fixed("vhdmount", target{file: f, drop: []string{f, in.dyn}}))
	f, done, err = mountVhd(c, in.chainTop, "chain", "--ro")
	if err != nil {
		return fmt.Errorf("mounting %s: %w", in.chainTop, err)
	}
	atExit(done)
	cs = append(cs, fixed("vhdmount-chain4", target{file: f, drop: append([]string{f}, in.chain...)}))
	// The flat content must be the dataset's, or the row measures nothing.
	if err := sameHead(top, in.raw, 64<<20); err != nil {
		runCleanups()
		return err
	}
	measure(c, rep, workload{name, "MiB/s", true, cs, func(_ int, _ string, t target) (float64, error) {
		dropCache(t.drop...)
		bw, _, err := fioJob(t.file, false, "--rw=read", "--bs=1M", "--size="+fmt.Sprint(c.size/2))
		return bw / (1 << 20), err
	}})
	runCleanups()
	return nil
}

// sameHead checks that the first n bytes of a and b are equal.
func sameHead(a, b string, n int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	pa, pb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(pa)) {
		if _, err := fa.ReadAt(pa, off); err != nil {
			return fmt.Errorf("%s at %d: %w", a, off, err)
		}
		if _, err := fb.ReadAt(pb, off); err != nil {
			return fmt.Errorf("%s at %d: %w", b, off, err)
		}
		if string(pa) != string(pb) {
			return fmt.Errorf("%s differs from %s in the MiB at %d", a, b, off)
		}
	}
	return nil
}
