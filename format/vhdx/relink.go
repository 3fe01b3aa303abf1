package vhdx

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// RelinkResult says what Relink wrote.
type RelinkResult struct {
	Child, Parent string // absolute paths
	RelativePath  string // the new relative_path value
	AbsolutePath  string // the new absolute_win32_path value
	Dropped       []string
	ItemOffset    int64 // file offset of the new ParentLocator item
}

// locatorItem returns the ParentLocator metadata item.
func (l *Layer) locatorItem() *MetadataItem {
	for i := range l.metaItems {
		if it := &l.metaItems[i]; !it.IsUser && it.ID == guidParentLocator {
			return it
		}
	}
	return nil
}

// freeMetaSpace returns the region-relative offset of n free bytes of the
// metadata region, 8-byte aligned, clear of its 64 KiB table and of every
// item, or -1 when there is no such room.
func (l *Layer) freeMetaSpace(n int64) int64 {
	type iv struct{ s, e int64 }
	used := []iv{{0, metadataTableSize}}
	for _, it := range l.metaItems {
		if it.Length > 0 {
			s := it.Off - l.meta.Off
			used = append(used, iv{s, s + it.Length})
		}
	}
	sort.Slice(used, func(i, j int) bool { return used[i].s < used[j].s })
	pos := int64(0)
	for _, u := range used {
		if u.s-pos >= n {
			return pos
		}
		pos = max(pos, (u.e+7)&^7)
	}
	if l.meta.Length-pos >= n {
		return pos
	}
	return -1
}

// RewriteLocator replaces the parent locator's key-value pairs by kv. The
// file's headers are first updated (new FileWriteGuid, DataWriteGuid kept:
// the virtual disk does not change). The new item is written into free
// space of the metadata region, where nothing refers to it, and synced;
// then only the table entry's Offset and Length (8 bytes within one
// sector) are rewritten, and synced. A crash before that write leaves the
// old locator in force, after it the new one. The table has no checksum:
// it is never rewritten whole. It returns the new item's file offset.
func (l *Layer) RewriteLocator(kv []LocatorEntry) (int64, error) {
	if l.w == nil {
		return 0, ErrReadOnly
	}
	it := l.locatorItem()
	if !l.hasParent || it == nil {
		return 0, fmt.Errorf("vhdx: %s: not a differencing file: it has no parent locator", l.path)
	}
	for _, e := range kv {
		for _, t := range []string{e.Key, e.Value} {
			if n := len(utf16.Encode([]rune(t))); n == 0 || n > 0xFFFF/2 {
				return 0, fmt.Errorf("vhdx: %s: parent locator entry %q: %d UTF-16 units; a key or value holds 1 to %d", l.path, e.Key, n, 0xFFFF/2)
			}
		}
	}
	data := encodeLocator(kv)
	if int64(len(data)) > maxMetadataItem {
		return 0, fmt.Errorf("vhdx: %s: the new parent locator (%d bytes) is too large", l.path, len(data))
	}
	w := l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	rel := l.freeMetaSpace(int64(len(data)))
	if rel < 0 {
		return 0, fmt.Errorf("vhdx: %s: no room for a %d-byte parent locator in the metadata region (0x%x bytes at 0x%x) beside the current items; nothing was written",
			l.path, len(data), l.meta.Length, l.meta.Off)
	}
	if !w.headerDone {
		if err := l.updateHeaders(false); err != nil {
			return 0, err
		}
	}
	off := l.meta.Off + rel
	if err := l.writeFile(data, off, thing{"new parent locator item", -1}); err != nil {
		return 0, err
	}
	if err := l.f.Sync(); err != nil {
		return 0, fmt.Errorf("vhdx: %s: fsync: %w", l.path, err)
	}
	var e [8]byte
	binary.LittleEndian.PutUint32(e[:], uint32(rel))
	binary.LittleEndian.PutUint32(e[4:], uint32(len(data)))
	if err := l.writeFile(e[:], it.entryOff+16, thing{"metadata table entry of the parent locator", -1}); err != nil {
		return 0, err
	}
	if err := l.f.Sync(); err != nil {
		return 0, fmt.Errorf("vhdx: %s: fsync: %w", l.path, err)
	}
	it.Off, it.Length = off, int64(len(data))
	l.locator = append([]LocatorEntry(nil), kv...)
	return off, nil
}

// Relink rewrites the parent locator of this differencing file to name
// newParent (an absolute path), which the caller has checked is its parent
// (MatchParent). relative_path and absolute_win32_path get the values
// Create writes; volume_path is dropped, since it names the old location
// and would be tried before absolute_win32_path; parent_linkage,
// parent_linkage2 and every other key are kept in order. See
// RewriteLocator for the crash-safe order.
func (l *Layer) Relink(newParent string) (*RelinkResult, error) {
	if l.w == nil {
		return nil, ErrReadOnly
	}
	if !utf8.ValidString(newParent) {
		return nil, fmt.Errorf("vhdx: parent path %q is not UTF-8 text, which a parent locator (UTF-16) cannot express", newParent)
	}
	if strings.Contains(newParent, `\`) {
		return nil, fmt.Errorf("vhdx: parent path %q holds a backslash, which a parent locator cannot express", newParent)
	}
	rel, err := filepath.Rel(filepath.Dir(l.path), newParent)
	if err != nil {
		return nil, fmt.Errorf("vhdx: cannot name %s relative to %s: %w", newParent, l.path, err)
	}
	win := func(s string) string { return strings.ReplaceAll(s, "/", `\`) }
	relWin := win(rel)
	if rel != ".." && !strings.HasPrefix(rel, "../") {
		relWin = `.\` + relWin
	}
	res := &RelinkResult{Child: l.path, Parent: newParent, RelativePath: relWin, AbsolutePath: win(newParent)}
	var kv []LocatorEntry
	seen := map[string]bool{}
	for _, e := range l.locator {
		switch e.Key {
		case "relative_path":
			e.Value = res.RelativePath
		case "absolute_win32_path":
			e.Value = res.AbsolutePath
		case "volume_path":
			res.Dropped = append(res.Dropped, e.Key)
			continue
		}
		seen[e.Key] = true
		kv = append(kv, e)
	}
	if !seen["relative_path"] {
		kv = append(kv, LocatorEntry{"relative_path", res.RelativePath})
	}
	if !seen["absolute_win32_path"] {
		kv = append(kv, LocatorEntry{"absolute_win32_path", res.AbsolutePath})
	}
	if res.ItemOffset, err = l.RewriteLocator(kv); err != nil {
		return nil, err
	}
	return res, nil
}
