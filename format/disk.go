package format

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// Disk is a VHD image, with its chain of parents, presented as one flat
// virtual disk. ReadAt and WriteAt follow the io.ReaderAt and io.WriterAt
// contracts and are safe for concurrent use.
type Disk struct {
	layers []*layer // layers[0] is the image opened; each next one its parent
	size   int64
}

// Open opens the VHD at path and, for a differencing disk, its whole chain of
// parents. opts may be nil.
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
	top, err := openLayer(path, f, opts, ro)
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &Disk{layers: []*layer{top}, size: top.size}
	for l := top; l.footer.DiskType == TypeDifferencing; {
		if len(d.layers) > MaxChainDepth {
			d.Close()
			return nil, fmt.Errorf("vhd: %s: %w: more than %d parents", path, ErrChain, MaxChainDepth)
		}
		for _, c := range d.layers {
			if c.footer.UniqueID == l.hdr.ParentUniqueID {
				d.Close()
				return nil, fmt.Errorf("vhd: %s: %w: parent unique id %s is %s, already in the chain (cycle)",
					l.path, ErrChain, l.hdr.ParentUniqueID, c.path)
			}
		}
		override := ""
		if l == top {
			override = opts.Parent
		}
		p, err := openParent(l, d.layers, opts, override)
		if err != nil {
			d.Close()
			return nil, err
		}
		if !ro {
			if err := lockFile(p.f, false); err != nil {
				p.f.Close()
				d.Close()
				return nil, lockErr(p.path, err, "it is the parent of "+path+" and is open for writing elsewhere")
			}
		}
		d.layers = append(d.layers, p)
		l = p
	}
	return d, nil
}

func lockErr(path string, err error, why string) error {
	if errors.Is(err, ErrLocked) {
		return &lockedError{path, why}
	}
	return fmt.Errorf("vhd: %s: lock: %w", path, err)
}

// lockedError says which image is in use and why; it wraps ErrLocked.
type lockedError struct{ path, why string }

func (e *lockedError) Error() string { return "vhd: " + e.path + ": image in use: " + e.why }
func (e *lockedError) Unwrap() error { return ErrLocked }

// Size returns the virtual disk size in bytes (the footer's CurrentSize).
func (d *Disk) Size() int64 { return d.size }

// Depth returns the number of parents below the top image.
func (d *Disk) Depth() int { return len(d.layers) - 1 }

// ReadOnly reports whether WriteAt is refused.
func (d *Disk) ReadOnly() bool { return d.layers[0].readOnly }

// Close closes every file of the chain.
func (d *Disk) Close() error {
	var errs []error
	for _, l := range d.layers {
		if err := l.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("vhd: %s: %w", l.path, err))
		}
	}
	return errors.Join(errs...)
}

// ReadAt reads len(p) bytes of the virtual disk at off. It returns io.EOF
// with a short count only when the read reaches the end of the disk.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
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
	return n, eof
}

// readLayer fills p with the content of the chain from layer i down at off.
// One read is issued per run of sectors that come from the same file.
func (d *Disk) readLayer(i int, p []byte, off int64) error {
	if i >= len(d.layers) {
		clear(p)
		return nil
	}
	l := d.layers[i]
	if off >= l.size { // a child larger than its parent reads zeros past the parent's end
		clear(p)
		return nil
	}
	if rest := l.size - off; int64(len(p)) > rest {
		clear(p[rest:])
		p = p[:rest]
	}
	if l.fixed() {
		return l.readData(p, off)
	}
	for len(p) > 0 {
		blk, in := off/l.blockSize, off%l.blockSize
		n := min(int64(len(p)), l.blockSize-in)
		if err := d.readBlock(i, l, blk, in, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readBlock reads p from block blk of layer l, starting in bytes into the block.
func (d *Disk) readBlock(i int, l *layer, blk, in int64, p []byte, off int64) error {
	e := l.entry(blk)
	if e == unallocated {
		return d.readLayer(i+1, p, off)
	}
	start, bm, err := l.block(blk, e)
	if err != nil {
		return err
	}
	data := start + l.bitmapSize
	switch {
	case bm.full:
		return l.readData(p, data+in)
	case bm.empty:
		return d.readLayer(i+1, p, off)
	}
	end := in + int64(len(p))
	for pos := in; pos < end; {
		s := pos / SectorSize
		runEnd := min(bm.run(s, (end+SectorSize-1)/SectorSize)*SectorSize, end)
		chunk := p[pos-in : runEnd-in]
		if bm.has(s) {
			err = l.readData(chunk, data+pos)
		} else {
			err = d.readLayer(i+1, chunk, off+pos-in)
		}
		if err != nil {
			return err
		}
		pos = runEnd
	}
	return nil
}

// readData reads from the layer's file; a short file is corruption.
func (l *layer) readData(p []byte, off int64) error {
	n, err := l.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return formatErr(l.path, off+int64(n), "data", ErrCorrupt, "file ends inside a block (read %d of %d bytes at 0x%x)", n, len(p), off)
	}
	return fmt.Errorf("vhd: %s: read %d bytes at 0x%x: %w", l.path, len(p), off, err)
}

// Sync flushes the top image's file to stable storage. Parents are never
// written, so they need no sync.
func (d *Disk) Sync() error {
	if d.layers[0].readOnly {
		return nil
	}
	if err := d.layers[0].f.Sync(); err != nil {
		return fmt.Errorf("vhd: %s: sync: %w", d.layers[0].path, err)
	}
	return nil
}
