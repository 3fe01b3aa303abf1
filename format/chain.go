package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

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

// candidate is one way the child names its parent.
type candidate struct {
	source string // W2ru, W2ku, MacX, header name, --parent
	raw    string // as recorded
	paths  []string
	direct int // paths[direct:] are basename fallbacks
}

// parentCandidates lists the places to look for l's parent, in policy order:
// W2ru, W2ku, MacX, header name (UTF-16BE, then UTF-16LE). Relative paths are
// resolved against the child's directory, never the working directory.
func (l *layer) parentCandidates() []candidate {
	dir := filepath.Dir(l.path)
	var out []candidate
	locs := l.locatorStrings()
	for _, code := range []string{"W2ru", "W2ku", "MacX"} {
		for _, raw := range locs[code] {
			var paths []string
			var direct int
			if code == "MacX" {
				paths, direct = macxPaths(raw, dir)
			} else {
				paths, direct = windowsPaths(raw, dir)
			}
			out = append(out, candidate{code, raw, paths, direct})
		}
	}
	nameBE := decodeUTF16(l.hdr.ParentUnicodeName[:], binary.BigEndian)
	if nameBE != "" {
		paths, direct := windowsPaths(nameBE, dir)
		out = append(out, candidate{"header name", nameBE, paths, direct})
	}
	nameLE := decodeUTF16(l.hdr.ParentUnicodeName[:], binary.LittleEndian)
	if nameLE != "" && asciiCount(nameLE) > asciiCount(nameBE) {
		paths, direct := windowsPaths(nameLE, dir)
		out = append(out, candidate{"header name (UTF-16LE)", nameLE, paths, direct})
	}
	return out
}

func asciiCount(s string) int {
	n := 0
	for _, r := range s {
		if r < 0x80 && unicode.IsPrint(r) {
			n++
		}
	}
	return n
}

// locatorStrings decodes the usable parent locators by platform code. Locators
// whose data lies outside the file or exceeds maxLocatorData are skipped.
func (l *layer) locatorStrings() map[string][]string {
	out := map[string][]string{}
	for i := range l.hdr.Locators {
		loc := &l.hdr.Locators[i]
		code := string(loc.Code[:])
		if code != "W2ru" && code != "W2ku" && code != "MacX" {
			continue
		}
		n := int64(loc.DataLength)
		if n == 0 || n > maxLocatorData || loc.DataOffset > uint64(l.fileSize) || int64(loc.DataOffset)+n > l.fileSize {
			continue
		}
		b := make([]byte, n)
		if l.readAtFull(b, int64(loc.DataOffset), "parent locator "+code) != nil {
			continue
		}
		var s string
		if code == "MacX" {
			s = strings.TrimRight(string(b), "\x00")
		} else {
			s = decodeUTF16(b, binary.LittleEndian)
		}
		if s != "" {
			out[code] = append(out[code], s)
		}
	}
	return out
}

// windowsPaths maps a Windows-style path onto this machine: `\` becomes `/`,
// relative paths are taken from dir, and a drive-letter or UNC path (or any
// path that does not lead to the parent) falls back to its basename in dir.
// It returns the paths and the index where the fallbacks start.
func windowsPaths(raw, dir string) ([]string, int) {
	p := strings.ReplaceAll(raw, `\`, "/")
	base := filepath.Join(dir, filepath.Base(p))
	switch {
	case len(p) >= 2 && p[1] == ':' && isLetter(p[0]), strings.HasPrefix(p, "//"):
		return []string{base}, 0
	case strings.HasPrefix(p, "/"):
		return []string{filepath.Clean(p), base}, 1
	default:
		return []string{filepath.Join(dir, p), base}, 1
	}
}

// macxPaths maps a MacX file URL (file://[localhost]/path, percent-encoded)
// onto this machine, like windowsPaths.
func macxPaths(raw, dir string) ([]string, int) {
	p := raw
	if strings.HasPrefix(p, "file://") {
		p = strings.TrimPrefix(p, "file://")
		p = strings.TrimPrefix(p, "localhost")
	}
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	base := filepath.Join(dir, filepath.Base(p))
	if strings.HasPrefix(p, "/") {
		return []string{filepath.Clean(p), base}, 1
	}
	return []string{filepath.Join(dir, p), base}, 1
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

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
