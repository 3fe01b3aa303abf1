package convert

import (
	"context"
	"io"
	"os"
	"sync"

	"github.com/vhdmount/vhdmount/format/vhdx"
)

// writeVHDX writes a fixed or dynamic VHDX file front to back: header
// section and metadata first, payload blocks in the order of the virtual
// disk, the BAT last. A block whose bytes are all zeros (or holes of src) is
// never stored and stays NOT_PRESENT, which every reader of a file without
// a parent reads as zeros; inside a stored block, all-zero chunks are left
// as holes of the file. A fixed output is sparse the same way.
func writeVHDX(ctx context.Context, src Source, tmp string, o Options) error {
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w, err := vhdx.NewWriter(f, vhdx.CreateOptions{Fixed: o.Output == VHDXFixed, Size: max(src.Size(), o.Size),
		BlockSize: o.BlockSize, SectorSize: o.SectorSize})
	if err == nil {
		err = copyToVHDX(ctx, src, w, f, o.Progress)
	}
	if err == nil {
		err = w.Finish()
	}
	if err == nil && o.Sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyToVHDX copies src into the image w writes to f with copyWorkers
// chunks in flight. Chunks lie within one block. Reading and the zero check
// run in parallel; each chunk then takes its turn in disk order to have its
// block allocated, so blocks are laid out in the order of the disk whatever
// the timing, and the write itself runs in parallel again.
func copyToVHDX(ctx context.Context, src Source, w *vhdx.Writer, f io.WriterAt, progress func(int64)) error {
	if progress == nil {
		progress = func(int64) {}
	}
	chunk := min(int64(copyChunk), w.BlockSize())
	bs := w.BlockSize()
	type job struct{ seq, off, n int64 }
	jobs := make(chan job, copyWorkers)
	errc := make(chan error, copyWorkers+1)
	var (
		mu     sync.Mutex
		turn   = sync.NewCond(&mu)
		next   int64
		failed bool
	)
	fail := func(err error) {
		mu.Lock()
		failed = true
		turn.Broadcast()
		mu.Unlock()
		errc <- err
	}
	var wg sync.WaitGroup
	for range copyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for j := range jobs {
				p := buf[:j.n]
				if err := readFull(src, p, j.off); err != nil {
					fail(&readError{err})
					return
				}
				data := !isZero(p)
				fo := int64(-1)
				mu.Lock()
				for next != j.seq && !failed {
					turn.Wait()
				}
				if failed {
					mu.Unlock()
					return
				}
				if data {
					fo = w.Block(j.off/bs) + j.off%bs
				}
				next++
				turn.Broadcast()
				mu.Unlock()
				if data {
					if _, err := f.WriteAt(p, fo); err != nil {
						fail(err)
						return
					}
				}
				progress(j.n)
			}
		}()
	}
	var seq int64
	return feedJobs(ctx, src, chunk, false, progress, jobs, errc, &wg, func(off, n int64) job {
		seq++
		return job{seq - 1, off, n}
	})
}
