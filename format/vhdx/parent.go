package vhdx

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vhdmount/vhdmount/format/layer"
)

func (l *Layer) locatorValue(key string) (string, bool) {
	for _, e := range l.locator {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// windowsOnly reports whether a locator path can only mean something on
// Windows: a drive letter, a \\?\ or \\.\ prefix, a UNC path or a volume GUID.
func windowsOnly(s string) bool {
	if strings.HasPrefix(s, `\\`) || strings.HasPrefix(s, `//`) {
		return true
	}
	if len(s) >= 2 && s[1] == ':' && (s[0]|0x20 >= 'a' && s[0]|0x20 <= 'z') {
		return true
	}
	return strings.Contains(strings.ToLower(s), "volume{")
}

// winBase returns the last element of a Windows or slash-separated path.
func winBase(s string) string {
	if i := strings.LastIndexAny(s, `\/`); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Parent returns how to find the parent of a differencing file (policy 7):
// relative_path relative to the child's directory with `\` read as `/`, then
// volume_path, then absolute_win32_path; a Windows-only path is looked for
// by its file name in the child's directory.
func (l *Layer) Parent() *layer.ParentRef {
	if !l.hasParent {
		return nil
	}
	dir := filepath.Dir(l.path)
	ref := &layer.ParentRef{ID: "{" + l.linkage.String() + "}"}
	seen := map[string]bool{}
	add := func(src, raw, path string) {
		if path == "" || seen[path] {
			return
		}
		seen[path] = true
		ref.Candidates = append(ref.Candidates, layer.Candidate{Source: src, Raw: raw, Path: path})
	}
	for _, key := range []string{"relative_path", "volume_path", "absolute_win32_path"} {
		raw, ok := l.locatorValue(key)
		if !ok || raw == "" {
			continue
		}
		if windowsOnly(raw) {
			if b := winBase(raw); b != "" && b != "." && b != ".." {
				add(key+" (basename)", raw, filepath.Join(dir, b))
			}
			continue
		}
		p := filepath.FromSlash(strings.ReplaceAll(raw, `\`, "/"))
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		add(key, raw, filepath.Clean(p))
	}
	return ref
}

// MatchParent reports whether p is this file's parent: a VHDX file whose
// current header's DataWriteGuid equals parent_linkage (or, with a warning,
// a non-zero parent_linkage2), never the all-zero GUID, with the same
// logical sector size.
func (l *Layer) MatchParent(p layer.Layer) error {
	if !l.hasParent {
		return fmt.Errorf("vhdx: %s has no parent: %w", l.path, layer.ErrParentMismatch)
	}
	pl, ok := p.(*Layer)
	if !ok {
		return fmt.Errorf("vhdx: %s: candidate parent %s is a %s image; the parent of a VHDX file must be VHDX: %w",
			l.path, p.Path(), p.Format(), layer.ErrParentMismatch)
	}
	dw := pl.headers[pl.cur].DataWriteGUID
	if dw.IsZero() {
		return fmt.Errorf("vhdx: %s: candidate parent %s has an all-zero DataWriteGuid, which never matches (parent_linkage {%s}): %w",
			l.path, pl.path, l.linkage, layer.ErrParentMismatch)
	}
	switch {
	case dw == l.linkage:
	case !l.linkage2.IsZero() && dw == l.linkage2:
		l.warnMu.Lock()
		l.warnings = append(l.warnings, fmt.Sprintf("parent %s matches only the deprecated parent_linkage2 {%s}, not parent_linkage {%s}", pl.path, l.linkage2, l.linkage))
		l.warnMu.Unlock()
	default:
		return fmt.Errorf("vhdx: %s: parent linkage mismatch: candidate parent %s has DataWriteGuid {%s}, the child's parent_linkage is {%s}: %w",
			l.path, pl.path, dw, l.linkage, layer.ErrParentMismatch)
	}
	if pl.lss != l.lss {
		return fmt.Errorf("vhdx: %s: candidate parent %s has %d-byte logical sectors, the child %d: %w",
			l.path, pl.path, pl.lss, l.lss, layer.ErrParentMismatch)
	}
	return nil
}
