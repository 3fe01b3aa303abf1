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
	"unicode"
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
	// OpenFile opens a file of the chain. The default is os.OpenFile with
	// O_RDWR when write is set, O_RDONLY otherwise.
	OpenFile func(path string, write bool) (File, error)
}

func (o *Options) openFile(path string, write bool) (File, error) {
	if o.OpenFile != nil {
		return o.OpenFile(path, write)
	}
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	return os.OpenFile(path, flag, 0)
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

// openParent finds, opens and verifies the parent of l. chain holds the
// layers opened so far (top first), for cycle detection.
func openParent(l *layer, chain []*layer, opts *Options, override string) (*layer, error) {
	var cands []candidate
	if override != "" {
		abs, err := filepath.Abs(override)
		if err != nil {
			abs = override
		}
		cands = []candidate{{"--parent", override, []string{abs}, 1}}
	} else {
		cands = l.parentCandidates()
	}
	want := l.hdr.ParentUniqueID
	perr := &ParentError{Child: l.path, ParentUUID: want.String(), Err: ErrParentNotFound}
	tried := map[string]bool{}
	for _, c := range cands {
		for i, p := range c.paths {
			src := c.source
			if i >= c.direct {
				src += " (basename)"
			}
			att := ParentAttempt{Source: src, Raw: c.raw, Path: p}
			if tried[p] {
				if i == 0 { // a fallback that repeats a path is not worth a line
					att.Reason = "same path as above"
					perr.Tried = append(perr.Tried, att)
				}
				continue
			}
			tried[p] = true
			parent, reason, mismatch := tryParent(p, want, chain, opts)
			if parent != nil {
				parent.foundVia, parent.foundRaw = src, c.raw
				return parent, nil
			}
			if mismatch {
				perr.Err = ErrParentMismatch
			}
			att.Reason = reason
			perr.Tried = append(perr.Tried, att)
		}
	}
	return nil, perr
}

// tryParent opens p as the parent with unique id want. On rejection it
// returns a reason, and whether the rejection was a unique id mismatch.
func tryParent(p string, want [16]byte, chain []*layer, opts *Options) (*layer, string, bool) {
	f, err := opts.openFile(p, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "no such file", false
		}
		return nil, err.Error(), false
	}
	if fi, err := f.Stat(); err == nil {
		for _, c := range chain {
			if cfi, err := c.f.Stat(); err == nil && os.SameFile(fi, cfi) {
				f.Close()
				return nil, "is " + c.path + ", already in the chain (cycle)", false
			}
		}
	}
	pl, err := openLayer(p, f, opts, true)
	if err != nil {
		f.Close()
		return nil, strings.TrimPrefix(err.Error(), "vhd: "), false
	}
	if pl.footer.UniqueID != want {
		f.Close()
		return nil, fmt.Sprintf("unique id %s, want %s", pl.footer.UniqueID, uuidString(want)), true
	}
	return pl, "", false
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
