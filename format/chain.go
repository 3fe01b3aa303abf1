package format

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// File is what a layer is read from and written to. *os.File implements it.
type File = lay.File

// MaxChainDepth is the largest number of parents a chain may have.
const MaxChainDepth = 256

// Options control how an image is opened. The zero value opens read-write
// with checksums verified.
type Options struct {
	// ReadOnly opens the top image read-only. Parents are always read-only.
	ReadOnly bool
	// Parent, if set, is the path of the top image's parent, used instead of
	// the locators and the header name. Its unique id must still match.
	Parent string
	// IgnoreChecksums accepts footers and headers whose checksum is wrong.
	// It forces ReadOnly.
	IgnoreChecksums bool
	// AllowMissingParent lets Open succeed on a chain whose parent cannot
	// be found: the Disk then describes the images found (Layers, Check)
	// and MissingParent says what is missing; ReadAt and WriteAt refuse.
	AllowMissingParent bool
	// OpenFile opens a file of the chain. The default opens regular files
	// only, without blocking (a FIFO or device named by a locator is
	// refused, never waited on), read-write when write is set.
	OpenFile func(path string, write bool) (File, error)
}

func (o *Options) openFile(path string, write bool) (File, error) {
	if o.OpenFile != nil {
		return o.OpenFile(path, write)
	}
	return openRegular(path, write)
}

// openRegular opens path without blocking and accepts only a regular file.
func openRegular(path string, write bool) (*os.File, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: errNotRegular(fi.Mode())}
	}
	return f, nil
}

// errNotRegular says what kind of file a non-regular file is.
type errNotRegular os.FileMode

func (e errNotRegular) Error() string {
	m := os.FileMode(e)
	kind := "not a regular file"
	switch {
	case m.IsDir():
		kind = "a directory"
	case m&os.ModeNamedPipe != 0:
		kind = "a FIFO"
	case m&os.ModeSocket != 0:
		kind = "a socket"
	case m&os.ModeCharDevice != 0:
		kind = "a character device"
	case m&os.ModeDevice != 0:
		kind = "a block device"
	}
	return "is " + kind + ", not an image file"
}

// openParent finds, opens and verifies the parent of l. It returns the
// parent and how it was found, or a *ParentError listing every path tried.
func (d *Disk) openParent(l lay.Layer, opts *Options, override string) (lay.Layer, File, lay.Candidate, error) {
	ref := l.Parent()
	cands := ref.Candidates
	if override != "" {
		cands = []lay.Candidate{{Source: "--parent", Raw: override, Path: overridePath(override)}}
	}
	perr := &ParentError{Child: l.Path(), ParentUUID: ref.ID, Err: ErrParentNotFound}
	tried := map[string]bool{}
	prev := ""
	for _, c := range cands {
		att := ParentAttempt{Source: c.Source, Raw: c.Raw, Path: c.Path}
		group := strings.TrimSuffix(c.Source, " (basename)") + "\x00" + c.Raw
		first := group != prev
		prev = group
		if tried[c.Path] {
			if first { // a fallback that repeats a path is not worth a line
				att.Reason = "same path as above"
				perr.Tried = append(perr.Tried, att)
			}
			continue
		}
		tried[c.Path] = true
		p, f, reason, err := d.tryParent(l, c.Path, opts)
		if err != nil {
			return nil, nil, c, err
		}
		if p != nil {
			return p, f, c, nil
		}
		if errors.Is(reason, ErrParentMismatch) {
			perr.Err = ErrParentMismatch
		}
		att.Reason = strings.TrimPrefix(reason.Error(), "vhd: ")
		perr.Tried = append(perr.Tried, att)
	}
	return nil, nil, lay.Candidate{}, perr
}

// tryParent opens path as l's parent. A rejected candidate gives a reason; a
// cycle is an error that ends the search.
func (d *Disk) tryParent(l lay.Layer, path string, opts *Options) (p lay.Layer, f File, reason, err error) {
	f, err = opts.openFile(path, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, errors.New("no such file"), nil
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, nil, err, nil
	}
	inChain := ""
	fi, _ := f.Stat()
	for i, c := range d.layers {
		if c.Path() == path {
			inChain = c.Path()
		} else if fi != nil {
			if cfi, err := d.files[i].Stat(); err == nil && os.SameFile(fi, cfi) {
				inChain = c.Path()
			}
		}
	}
	pl, err := openAny(path, f, opts, true)
	if err != nil {
		f.Close()
		return nil, nil, err, nil
	}
	if err := l.MatchParent(pl); err != nil {
		pl.Close()
		return nil, nil, err, nil
	}
	if inChain != "" {
		pl.Close()
		return nil, nil, nil, fmt.Errorf("vhd: %s: %w: its parent %s is %s, already in the chain (cycle)", l.Path(), ErrChain, path, inChain)
	}
	return pl, f, nil, nil
}

// overridePath makes a --parent path absolute.
func overridePath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}
