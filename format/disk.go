package format

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	lay "github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// Disk is a disk image, with its chain of parents, presented as one flat
// virtual disk. ReadAt and WriteAt follow the io.ReaderAt and io.WriterAt
// contracts and are safe for concurrent use.
//
// The chain is format-neutral: each image is a lay.Layer of its format's
// package, and reads walk the layers top down through their Map.
type Disk struct {
	layers []lay.Layer     // layers[0] is the image opened; each next one its parent
	files  []File          // files[i] is what layers[i] reads, for locks and cycle checks
	found  []lay.Candidate // found[i] is how layers[i] was found (zero for the top)
	w      lay.Writer      // layers[0] when it was opened for writing, else nil
	size   int64

	// missing is set when Options.AllowMissingParent let Open stop at a
	// parent it could not find; reads and writes then return it.
	missing error

	allocOnce sync.Once
	allocated atomic.Int64  // AllocatedBytes, once computed; kept current by writes
	allocGen  atomic.Uint64 // counts changes of the top layer's extents (lay.AllocNotifier)

	extMu sync.Mutex   // guards hints
	hints []extentHint // per layer, for Extent

	ra readahead // the files read ahead of a sequential reader
}

// Open opens the image at path and, for a differencing disk, its whole
// chain of parents. opts may be nil.
func Open(path string, opts *Options) (*Disk, error) {
	if opts == nil {
		opts = &Options{}
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	ro := opts.ReadOnly || opts.IgnoreChecksums
	f, err := opts.openFile(path, !ro)
	if err != nil {
		return nil, fmt.Errorf("vhd: %w", err)
	}
	if !ro {
		// A writer excludes other writers of this image and of its parents;
		// read-only opens take no lock, so a live image can be inspected.
		if err := lockFile(f, true); err != nil {
			f.Close()
			return nil, lockErr(path, err, "it is open for writing elsewhere (a mount?), or it is the parent of a writable child")
		}
	}
	top, err := openAny(path, f, opts, ro)
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &Disk{layers: []lay.Layer{top}, files: []File{f}, found: []lay.Candidate{{}}, size: top.Size()}
	if w, ok := top.(lay.Writer); ok && !ro {
		d.w = w
	}
	for l := top; l.Parent() != nil; {
		if len(d.layers) > MaxChainDepth {
			d.Close()
			return nil, fmt.Errorf("vhd: %s: %w: more than %d parents", path, ErrChain, MaxChainDepth)
		}
		override := ""
		if l == top {
			override = opts.Parent
		}
		p, pf, via, err := d.openParent(l, opts, override)
		if err != nil {
			var pe *ParentError
			if opts.AllowMissingParent && errors.As(err, &pe) {
				d.missing = err
				d.w = nil // nothing is written into a chain that is not whole
				break
			}
			d.Close()
			return nil, err
		}
		if !ro {
			if err := lockFile(pf, false); err != nil {
				p.Close()
				d.Close()
				return nil, lockErr(p.Path(), err, "it is the parent of "+path+" and is open for writing elsewhere")
			}
		}
		d.layers = append(d.layers, p)
		d.files = append(d.files, pf)
		d.found = append(d.found, via)
		l = p
	}
	if d.w != nil {
		if n, ok := d.w.(lay.AllocNotifier); ok {
			n.NotifyAlloc(d.noteAlloc, d.noteFree)
		}
		d.AllocatedBytes() // computed before any write, so writes can keep it current
	}
	return d, nil
}

// openAny opens one image of any format this package reads: a file that
// starts with the VHDX identifier is a VHDX, anything else is tried as a VHD.
func openAny(path string, f File, opts *Options, ro bool) (lay.Layer, error) {
	var sig [8]byte
	if n, _ := f.ReadAt(sig[:], 0); vhdx.Probe(sig[:n]) {
		l, err := vhdx.Open(path, f, vhdx.Options{ReadOnly: ro})
		if err != nil {
			return nil, vhdxErr{err}
		}
		return l, nil
	}
	l, err := vhd.Open(path, f, vhd.Options{ReadOnly: ro, IgnoreChecksums: opts.IgnoreChecksums})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// vhdxErr gives a VHDX error this package's "vhd: " prefix in place of its own.
type vhdxErr struct{ err error }

func (e vhdxErr) Error() string { return "vhd: " + strings.TrimPrefix(e.err.Error(), "vhdx: ") }
func (e vhdxErr) Unwrap() error { return e.err }

func lockErr(path string, err error, why string) error {
	if err == ErrLocked {
		return &lockedError{path, why}
	}
	if errors.Is(err, ErrLocked) { // a qemu lock: its text says which permission and byte
		return &lockedError{path, strings.TrimPrefix(err.Error(), ErrLocked.Error()+": ")}
	}
	return fmt.Errorf("vhd: %s: lock: %w", path, err)
}

// lockedError says which image is in use and why; it wraps ErrLocked.
type lockedError struct{ path, why string }

func (e *lockedError) Error() string { return "vhd: " + e.path + ": image in use: " + e.why }
func (e *lockedError) Unwrap() error { return ErrLocked }

// Size returns the virtual disk size in bytes.
func (d *Disk) Size() int64 { return d.size }

// Depth returns the number of parents below the top image.
func (d *Disk) Depth() int { return len(d.layers) - 1 }

// ReadOnly reports whether WriteAt is refused.
func (d *Disk) ReadOnly() bool { return d.w == nil }

// MissingParent returns the error that stopped the chain when
// Options.AllowMissingParent was set and a parent could not be found, or
// nil for a complete chain.
func (d *Disk) MissingParent() error { return d.missing }

// Close closes every file of the chain.
func (d *Disk) Close() error {
	d.ra.wg.Wait() // no advice is given through a closed file
	var errs []error
	for _, l := range d.layers {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("vhd: %s: %w", l.Path(), err))
		}
	}
	return errors.Join(errs...)
}

// ReadAt reads len(p) bytes of the virtual disk at off. It returns io.EOF
// with a short count only when the read reaches the end of the disk.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if d.missing != nil {
		return 0, d.missing
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrOutOfRange, off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if rest := d.size - off; int64(n) > rest {
		n, eof = int(rest), io.EOF
	}
	if err := d.readLayer(0, p[:n], off); err != nil {
		return 0, err
	}
	d.ra.note(d, off, int64(n))
	return n, eof
}

var runPool = sync.Pool{New: func() any { s := make([]lay.Run, 0, 16); return &s }}

// piece is one read of a layer's file that readLayer issues.
type piece struct {
	l   lay.Layer
	p   []byte
	off int64 // in the layer's file
}

var piecePool = sync.Pool{New: func() any { s := make([]piece, 0, 16); return &s }}

// A read that splits into several pieces of at least fanOutMin bytes in all
// is issued by up to fanOutMax goroutines at once: a read of a chain draws
// on several files in short runs, and one pread after the other would keep
// a single request in flight while the files are cold.
const (
	fanOutMin = 128 << 10
	fanOutMax = 4
)

// readLayer fills p with the content of the chain from layer i down at off.
// One read is issued per run of bytes that come from the same file.
func (d *Disk) readLayer(i int, p []byte, off int64) error {
	pp := piecePool.Get().(*[]piece)
	pieces, err := d.collect((*pp)[:0], i, p, off)
	if err == nil {
		err = readPieces(pieces, len(p))
	}
	clear(pieces) // keep no buffer alive in the pool
	*pp = pieces[:0]
	piecePool.Put(pp)
	return err
}

// collect fills the parts of p that read zeros from layer i down at off and
// appends a piece for each part stored in a file.
func (d *Disk) collect(pieces []piece, i int, p []byte, off int64) ([]piece, error) {
	err := d.walk(i, off, int64(len(p)), func(li int, r lay.Run, at int64) {
		chunk := p[at-off : at-off+r.Len]
		if li < 0 {
			clear(chunk)
			return
		}
		pieces = append(pieces, piece{d.layers[li], chunk, r.FileOff})
	})
	return pieces, err
}

// walk calls fn, in order, for every run of the chain's content from layer
// i down over the n bytes at off: at is the run's virtual offset, li the
// index of the layer whose file holds it, or -1 for a run that reads zeros
// (a Zero run, or past the end of the chain or of a parent smaller than its
// child).
func (d *Disk) walk(i int, off, n int64, fn func(li int, r lay.Run, at int64)) error {
	if i >= len(d.layers) {
		fn(-1, lay.Run{Len: n}, off)
		return nil
	}
	l := d.layers[i]
	size := l.Size()
	if off >= size { // a child larger than its parent reads zeros past the parent's end
		fn(-1, lay.Run{Len: n}, off)
		return nil
	}
	if rest := size - off; n > rest {
		defer fn(-1, lay.Run{Len: n - rest}, off+rest)
		n = rest
	}
	rp := runPool.Get().(*[]lay.Run)
	defer runPool.Put(rp)
	runs, err := l.Map((*rp)[:0], off, n)
	*rp = runs[:0]
	if err != nil {
		return err
	}
	var pos int64
	for _, r := range runs {
		if r.Len <= 0 || pos+r.Len > n {
			return fmt.Errorf("vhd: %s: BUG: mapping of %d bytes at %d returned a run of %d bytes at %d", l.Path(), n, off, r.Len, pos)
		}
		switch r.State {
		case lay.Data:
			fn(i, r, off+pos)
		case lay.Zero:
			fn(-1, r, off+pos)
		default:
			if err := d.walk(i+1, off+pos, r.Len, fn); err != nil {
				return err
			}
		}
		pos += r.Len
	}
	if pos != n {
		return fmt.Errorf("vhd: %s: BUG: mapping of %d bytes at %d covered %d", l.Path(), n, off, pos)
	}
	return nil
}

// readPieces reads every piece (n bytes in all), in parallel when there
// are several and enough bytes to make it worth it; the first error wins.
func readPieces(pieces []piece, n int) error {
	if len(pieces) < 2 || n < fanOutMin {
		for _, pc := range pieces {
			if err := pc.l.ReadData(pc.p, pc.off); err != nil {
				return err
			}
		}
		return nil
	}
	workers := min(len(pieces), fanOutMax)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = readEvery(pieces, w, workers)
		}()
	}
	errs[0] = readEvery(pieces, 0, workers)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// readEvery reads pieces[first], pieces[first+step], ...
func readEvery(pieces []piece, first, step int) error {
	for k := first; k < len(pieces); k += step {
		pc := pieces[k]
		if err := pc.l.ReadData(pc.p, pc.off); err != nil {
			return err
		}
	}
	return nil
}

// WriteAt writes len(p) bytes at off into the top image. Parents are never
// written. The disk must have been opened read-write; the write goes to the
// top layer through its lay.Writer, which reads what it needs of the chain
// below it (the edges of partly written sectors) through a view of the
// layers under it. Durability needs Sync.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if d.w == nil {
		return 0, ErrReadOnly
	}
	if off < 0 || off > d.size || int64(len(p)) > d.size-off {
		return 0, fmt.Errorf("%w: write of %d bytes at %d on a disk of %d bytes", ErrOutOfRange, len(p), off, d.size)
	}
	return d.w.WriteAt(p, off, belowView{d})
}

// belowView reads the flat content of the chain below the top layer: what
// the top's parent shows, zeros past its end or when there is none.
type belowView struct{ d *Disk }

func (b belowView) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrOutOfRange, off)
	}
	if err := b.d.readLayer(1, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync flushes the top image's file to stable storage. Parents are never
// written, so they need no sync.
func (d *Disk) Sync() error {
	if d.w == nil {
		return nil
	}
	return d.w.Sync()
}
