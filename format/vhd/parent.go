package vhd

import (
	"encoding/binary"
	"net/url"
	"path/filepath"
	"strings"
	"unicode"
)

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
func (l *Layer) parentCandidates() []candidate {
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
func (l *Layer) locatorStrings() map[string][]string {
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
