// Package vhdx reads VHDX images ([MS-VHDX]) as layers of the format-neutral
// chain (package layer): fixed, dynamic and differencing files, with a
// pending log replayed in memory. A read-write open replays a pending log
// into the file and makes the layer writable (write.go).
//
// Where readers disagree, it follows the project's policies (docs/format-notes.md,
// section VHDX): the valid header with the greater sequence number, region
// table 1 else 2, metadata keyed by (item id, IsUser), the fixed-stride BAT
// index formula, LSB-first sector bitmaps, and the parent locator keys tried
// as relative_path, volume_path, absolute_win32_path.
package vhdx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf16"

	"github.com/vhdmount/vhdmount/format/layer"
)

// Layout constants of [MS-VHDX].
const (
	kiB = 1 << 10
	miB = 1 << 20

	fileIDOff     = 0
	header1Off    = 64 * kiB
	header2Off    = 128 * kiB
	headerSize    = 4 * kiB
	region1Off    = 192 * kiB
	region2Off    = 256 * kiB
	regionSize    = 64 * kiB
	headerAreaEnd = 1 * miB // the header section: identifier, headers, region tables

	maxRegionEntries   = 2047
	maxMetadataEntries = 2047
	metadataTableSize  = 64 * kiB
	maxMetadataItem    = 1 * miB

	// MaxSize is the largest virtual size served (policy: 64 TiB).
	MaxSize        = 64 << 40
	minBlockSize   = 1 * miB
	maxBlockSize   = 256 * miB
	maxLogLength   = 64 * miB // a longer log is refused as unsupported (read into memory)
	maxFileOffset  = 1 << 50  // no offset in a file beyond 1 PiB is believed
	sectorsPerChnk = 1 << 23  // sectors one sector bitmap block describes
)

// BAT entry states.
const (
	stNotPresent       = 0 // payload NOT_PRESENT; sector bitmap NOT_PRESENT
	stUndefined        = 1
	stZero             = 2
	stUnmapped         = 3
	stFullyPresent     = 6 // payload FULLY_PRESENT; sector bitmap PRESENT
	stPartiallyPresent = 7
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// GUID is a GUID as stored in a VHDX file (Microsoft's mixed-endian layout).
type GUID [16]byte

// String formats g as lower-case text without braces.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(g[0:]),
		binary.LittleEndian.Uint16(g[4:]), binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

// IsZero reports whether g is all zeros.
func (g GUID) IsZero() bool { return g == GUID{} }

// MarshalText writes the GUID's text form.
func (g GUID) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// parseGUID reads GUID text, with or without braces, in any letter case.
func parseGUID(s string) (GUID, bool) {
	var g GUID
	s = strings.TrimSpace(s)
	if len(s) == 38 && s[0] == '{' && s[37] == '}' {
		s = s[1:37]
	}
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, false
	}
	hex := strings.ReplaceAll(s, "-", "")
	var raw [16]byte
	for i := 0; i < 16; i++ {
		hi, ok1 := unhex(hex[2*i])
		lo, ok2 := unhex(hex[2*i+1])
		if !ok1 || !ok2 {
			return g, false
		}
		raw[i] = hi<<4 | lo
	}
	// raw is big-endian text order; store the first three fields little-endian.
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func mustGUID(s string) GUID {
	g, ok := parseGUID(s)
	if !ok {
		panic("BUG: bad GUID literal " + s) // only package-level literals come here
	}
	return g
}

// Well-known GUIDs of [MS-VHDX].
var (
	guidBATRegion      = mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	guidMetadataRegion = mustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

	guidFileParameters     = mustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	guidVirtualDiskSize    = mustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	guidPage83Data         = mustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	guidLogicalSectorSize  = mustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	guidPhysicalSectorSize = mustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	guidParentLocator      = mustGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

	guidVHDXLocatorType = mustGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
)

// Options says how to open an image.
type Options struct {
	// ReadOnly opens the file for reading only; otherwise the layer is
	// writable (layer.Writer) and f must be open for writing.
	ReadOnly bool
}

// Header is one of the two headers of a VHDX file.
type Header struct {
	Off            int64  `json:"offset"`
	SequenceNumber uint64 `json:"sequence_number"`
	FileWriteGUID  GUID   `json:"file_write_guid"`
	DataWriteGUID  GUID   `json:"data_write_guid"`
	LogGUID        GUID   `json:"log_guid"`
	LogVersion     uint16 `json:"log_version"`
	Version        uint16 `json:"version"`
	LogLength      uint32 `json:"log_length"`
	LogOffset      uint64 `json:"log_offset"`
	raw            []byte
}

// Region is an entry of the region table.
type Region struct {
	GUID     GUID   `json:"guid"`
	Name     string `json:"name"` // "BAT", "metadata" or "unknown"
	Off      int64  `json:"offset"`
	Length   int64  `json:"length"`
	Required bool   `json:"required"`
	entryOff int64
}

// MetadataItem is an entry of the metadata table.
type MetadataItem struct {
	ID            GUID   `json:"id"`
	Name          string `json:"name"`
	Off           int64  `json:"offset"` // absolute file offset of the item
	Length        int64  `json:"length"`
	IsUser        bool   `json:"is_user"`
	IsVirtualDisk bool   `json:"is_virtual_disk"`
	IsRequired    bool   `json:"is_required"`
	entryOff      int64
}

// LocatorEntry is one key/value pair of the parent locator.
type LocatorEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Layer is one VHDX file. It implements layer.Layer; its
// methods are safe for concurrent use.
type Layer struct {
	path     string
	f        layer.File
	fileSize int64        // physical size when opened
	effSize  atomic.Int64 // size after an in-memory log replay (LastFileOffset); grows as a writer extends the file
	creator  string

	headers     [2]*Header // nil when invalid
	headerErrs  [2]error
	cur         int // index of the current header
	regions     []Region
	regionCopy  int   // 1 or 2
	regionErr1  error // why copy 1 was not used
	bat, meta   Region
	metaItems   []MetadataItem
	locatorType GUID
	locator     []LocatorEntry
	linkage     GUID // parent_linkage
	linkage2    GUID // parent_linkage2, zero when absent

	blockSize   int64
	leaveAlloc  bool
	hasParent   bool
	size        int64
	lss, pss    int
	page83      GUID
	chunkRatio  int64
	nblocks     int64
	batEntries  int64 // entries the BAT must hold (fixed stride)
	spb         int64 // sectors per block
	logReplayed *replayState

	cacheMu   sync.Mutex
	cacheGen  uint64 // bumped under cacheMu by every write to a cached structure
	batPages  map[int64]*batPg
	bitmaps   map[int64][]byte
	warnMu    sync.Mutex
	warnings  []string
	metaAreas []area // no payload or bitmap block may overlap these

	w *writeState // nil when opened read-only
}

type area struct {
	start, end int64
	what       string
}

// Probe reports whether b, the start of a file, begins with the VHDX file
// type identifier "vhdxfile".
func Probe(b []byte) bool { return len(b) >= 8 && string(b[:8]) == "vhdxfile" }

func ferr(path string, off int64, field string, err error, detail string, args ...any) error {
	if len(args) > 0 {
		detail = fmt.Sprintf(detail, args...)
	}
	return &layer.FormatError{Path: path, Off: off, Field: field, Detail: detail, Err: err}
}

// Open parses the VHDX file f, whose path is path. It reads the headers,
// region table and metadata, replays a pending log in memory, and leaves the
// BAT on disk (pages are read on demand). A read-only open never writes f.
//
// With ReadOnly false, f must be open for reading and writing: the file is
// checked first (Check; any problem refuses the open, since a damaged image
// is never written), a pending log is replayed into the file and cleared,
// and the layer implements layer.Writer. Until the first WriteAt such an
// open leaves the file unchanged (a log replay apart). On error the caller
// still owns f; on success Close closes it.
func Open(path string, f layer.File, opts Options) (*Layer, error) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	l, err := openParsed(path, f)
	if err != nil || opts.ReadOnly {
		return l, err
	}
	replayed, err := l.prepareWrite()
	if err != nil {
		return nil, err
	}
	if replayed {
		if l, err = openParsed(path, f); err != nil {
			return nil, err
		}
		if ps := l.check(true); len(ps) > 0 {
			return nil, ferr(path, ps[0].Off, "structure check after the log replay", layer.ErrCorrupt, "%s", ps[0].Msg)
		}
	}
	if err := l.startWriting(); err != nil {
		return nil, err
	}
	return l, nil
}

func openParsed(path string, f layer.File) (*Layer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vhdx: %s: %w", path, err)
	}
	l := &Layer{path: path, f: f, fileSize: fi.Size(), batPages: map[int64]*batPg{}, bitmaps: map[int64][]byte{}}
	l.effSize.Store(l.fileSize)
	if err := l.parse(); err != nil {
		return nil, err
	}
	return l, nil
}

// readRaw reads exactly len(b) bytes of the file at off, without the log.
func (l *Layer) readRaw(b []byte, off int64, what string) error {
	n, err := l.f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return ferr(l.path, off, what, layer.ErrCorrupt, "file ends after %d of %d bytes", n, len(b))
	}
	return fmt.Errorf("vhdx: %s: reading %s (%d bytes at 0x%x): %w", l.path, what, len(b), off, err)
}

// readAt reads len(b) bytes at off as the file reads after the log replay:
// the bytes the log writes replace the file's, and the file extends to the
// log's LastFileOffset with zeros.
func (l *Layer) readAt(b []byte, off int64, what string) error {
	eff := l.effSize.Load()
	if off < 0 || off > maxFileOffset || int64(len(b)) > eff || off+int64(len(b)) > eff {
		return ferr(l.path, off, what, layer.ErrCorrupt, "%d bytes at 0x%x lie past the end of the file (%d bytes)", len(b), off, eff)
	}
	phys := b
	if l.logReplayed != nil && off+int64(len(b)) > l.fileSize {
		k := max(l.fileSize-off, 0)
		phys = b[:k]
		clear(b[k:])
	}
	if len(phys) > 0 {
		if err := l.readRaw(phys, off, what); err != nil {
			return err
		}
	}
	if l.logReplayed != nil {
		l.logReplayed.apply(b, off)
	}
	return nil
}

func (l *Layer) parse() error {
	p := l.path
	var id [8 + 512]byte
	n, err := l.f.ReadAt(id[:], 0)
	if n < 8 || !Probe(id[:n]) {
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("vhdx: %s: reading the file identifier: %w", p, err)
		}
		return ferr(p, 0, "file identifier Signature", layer.ErrNotImage, "no \"vhdxfile\" at offset 0")
	}
	if n == len(id) {
		l.creator = utf16z(id[8:])
	}
	if l.fileSize < headerAreaEnd {
		return ferr(p, 0, "file size", layer.ErrCorrupt, "%d bytes: shorter than the 1 MiB header section", l.fileSize)
	}
	if err := l.parseHeaders(); err != nil {
		return err
	}
	if err := l.parseRegions(); err != nil {
		return err
	}
	h := l.headers[l.cur]
	if !h.LogGUID.IsZero() {
		rs, err := l.replayLog()
		if err != nil {
			return err
		}
		l.logReplayed = rs
		l.effSize.Store(max(l.fileSize, rs.lastFileOffset))
	}
	l.metaAreas = []area{{0, headerAreaEnd, "header section"}}
	if h.LogLength > 0 {
		l.metaAreas = append(l.metaAreas, area{int64(h.LogOffset), int64(h.LogOffset) + int64(h.LogLength), "log"})
	}
	for _, r := range l.regions {
		if eff := l.effSize.Load(); r.Off+r.Length > eff {
			return ferr(p, r.entryOff+16, "region table "+r.Name+" region FileOffset", layer.ErrCorrupt,
				"region 0x%x+0x%x lies past the end of the file (%d bytes)", r.Off, r.Length, eff)
		}
		l.metaAreas = append(l.metaAreas, area{r.Off, r.Off + r.Length, r.Name + " region"})
	}
	for i, a := range l.metaAreas {
		for _, b := range l.metaAreas[:i] {
			if a.start < b.end && b.start < a.end {
				return ferr(p, a.start, a.what, layer.ErrCorrupt, "0x%x-0x%x overlaps the %s at 0x%x-0x%x", a.start, a.end, b.what, b.start, b.end)
			}
		}
	}
	if err := l.parseMetadata(); err != nil {
		return err
	}
	// BAT geometry (policy 4).
	l.spb = l.blockSize / int64(l.lss)
	l.chunkRatio = sectorsPerChnk * int64(l.lss) / l.blockSize
	l.nblocks = (l.size + l.blockSize - 1) / l.blockSize
	last := l.nblocks - 1
	l.batEntries = last + last/l.chunkRatio + 1
	if l.hasParent {
		l.batEntries = (last/l.chunkRatio + 1) * (l.chunkRatio + 1)
	}
	if l.batEntries*8 > l.bat.Length {
		return ferr(p, l.bat.entryOff+24, "region table BAT region Length", layer.ErrCorrupt,
			"%d bytes cannot hold the %d BAT entries of %d blocks of %d bytes", l.bat.Length, l.batEntries, l.nblocks, l.blockSize)
	}
	return nil
}

func utf16z(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func crcOK(b []byte, at int) (stored, computed uint32) {
	stored = binary.LittleEndian.Uint32(b[at:])
	c := crc32.Update(0, crcTable, b[:at])
	c = crc32.Update(c, crcTable, []byte{0, 0, 0, 0})
	c = crc32.Update(c, crcTable, b[at+4:])
	return stored, c
}

func (l *Layer) parseHeaders() error {
	p := l.path
	for i, off := range []int64{header1Off, header2Off} {
		b := make([]byte, headerSize)
		if err := l.readRaw(b, off, fmt.Sprintf("header %d", i+1)); err != nil {
			return err
		}
		if string(b[:4]) != "head" {
			l.headerErrs[i] = ferr(p, off, fmt.Sprintf("header %d Signature", i+1), layer.ErrCorrupt, "%q is not \"head\"", b[:4])
			continue
		}
		if s, c := crcOK(b, 4); s != c {
			l.headerErrs[i] = ferr(p, off+4, fmt.Sprintf("header %d Checksum", i+1), layer.ErrChecksum, "stored 0x%08x, computed 0x%08x", s, c)
			continue
		}
		h := &Header{Off: off, raw: b,
			SequenceNumber: binary.LittleEndian.Uint64(b[8:]),
			LogVersion:     binary.LittleEndian.Uint16(b[64:]),
			Version:        binary.LittleEndian.Uint16(b[66:]),
			LogLength:      binary.LittleEndian.Uint32(b[68:]),
			LogOffset:      binary.LittleEndian.Uint64(b[72:]),
		}
		copy(h.FileWriteGUID[:], b[16:])
		copy(h.DataWriteGUID[:], b[32:])
		copy(h.LogGUID[:], b[48:])
		l.headers[i] = h
	}
	h1, h2 := l.headers[0], l.headers[1]
	switch {
	case h1 == nil && h2 == nil:
		return fmt.Errorf("vhdx: %s: no valid header: %w; %v", p, l.headerErrs[0], l.headerErrs[1])
	case h1 == nil:
		l.cur = 1
	case h2 == nil:
		l.cur = 0
	case h1.SequenceNumber > h2.SequenceNumber:
		l.cur = 0
	case h2.SequenceNumber > h1.SequenceNumber:
		l.cur = 1
	default:
		if !bytes.Equal(h1.raw, h2.raw) {
			return ferr(p, header2Off+8, "header 2 SequenceNumber", layer.ErrCorrupt,
				"both headers are valid with sequence number %d but differ", h1.SequenceNumber)
		}
		l.cur = 0
	}
	h := l.headers[l.cur]
	hn := fmt.Sprintf("header %d ", l.cur+1)
	if h.Version != 1 {
		return ferr(p, h.Off+66, hn+"Version", layer.ErrUnsupported, "version %d; only 1 is known", h.Version)
	}
	if !h.LogGUID.IsZero() && h.LogVersion != 0 {
		return ferr(p, h.Off+64, hn+"LogVersion", layer.ErrUnsupported, "log version %d; only 0 is known", h.LogVersion)
	}
	if h.LogLength%miB != 0 || h.LogOffset%miB != 0 || (h.LogLength > 0 && h.LogOffset < headerAreaEnd) || h.LogOffset > maxFileOffset {
		return ferr(p, h.Off+68, hn+"LogLength/LogOffset", layer.ErrCorrupt,
			"log 0x%x+0x%x is not MiB-aligned after the header section", h.LogOffset, h.LogLength)
	}
	if !h.LogGUID.IsZero() && h.LogLength == 0 {
		return ferr(p, h.Off+68, hn+"LogLength", layer.ErrCorrupt, "a log GUID is set but the log is empty")
	}
	return nil
}

func (l *Layer) parseRegions() error {
	var errs [2]error
	for i, off := range []int64{region1Off, region2Off} {
		regions, err := l.parseRegionTable(i+1, off)
		if err == nil {
			l.regions, l.regionCopy = regions, i+1
			if i == 1 {
				l.regionErr1 = errs[0]
			}
			break
		}
		errs[i] = err
		if !errors.Is(err, layer.ErrChecksum) && !errors.Is(err, errBadSignature) {
			return err // a valid table with bad content: no fallback
		}
	}
	if l.regions == nil {
		return fmt.Errorf("vhdx: %s: no valid region table: %w; %v", l.path, errs[0], errs[1])
	}
	for _, r := range l.regions {
		switch r.GUID {
		case guidBATRegion:
			l.bat = r
		case guidMetadataRegion:
			l.meta = r
		}
	}
	return nil
}

var errBadSignature = fmt.Errorf("%w: bad signature", layer.ErrCorrupt)

func (l *Layer) parseRegionTable(n int, off int64) ([]Region, error) {
	p := l.path
	b := make([]byte, regionSize)
	if err := l.readRaw(b, off, fmt.Sprintf("region table %d", n)); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("region table %d ", n)
	if string(b[:4]) != "regi" {
		return nil, ferr(p, off, name+"Signature", errBadSignature, "%q is not \"regi\"", b[:4])
	}
	if s, c := crcOK(b, 4); s != c {
		return nil, ferr(p, off+4, name+"Checksum", layer.ErrChecksum, "stored 0x%08x, computed 0x%08x", s, c)
	}
	count := binary.LittleEndian.Uint32(b[8:])
	if count > maxRegionEntries {
		return nil, ferr(p, off+8, name+"EntryCount", layer.ErrCorrupt, "%d entries; at most %d", count, maxRegionEntries)
	}
	var out []Region
	var haveBAT, haveMeta bool
	for i := 0; i < int(count); i++ {
		e := b[16+32*i:]
		eo := off + 16 + 32*int64(i)
		fo := binary.LittleEndian.Uint64(e[16:])
		r := Region{Length: int64(binary.LittleEndian.Uint32(e[24:])), Required: binary.LittleEndian.Uint32(e[28:])&1 != 0, entryOff: eo}
		copy(r.GUID[:], e)
		switch r.GUID {
		case guidBATRegion:
			r.Name = "BAT"
			if haveBAT {
				return nil, ferr(p, eo, name+"BAT entry", layer.ErrCorrupt, "the BAT region is listed twice")
			}
			haveBAT = true
		case guidMetadataRegion:
			r.Name = "metadata"
			if haveMeta {
				return nil, ferr(p, eo, name+"metadata entry", layer.ErrCorrupt, "the metadata region is listed twice")
			}
			haveMeta = true
		default:
			r.Name = "unknown " + r.GUID.String()
			if r.Required {
				return nil, ferr(p, eo, name+"entry", layer.ErrUnsupported, "unknown required region %s", r.GUID)
			}
		}
		if fo > maxFileOffset || fo%miB != 0 || fo < headerAreaEnd || r.Length%miB != 0 || r.Length == 0 {
			return nil, ferr(p, eo+16, name+r.Name+" region FileOffset/Length", layer.ErrCorrupt,
				"region 0x%x+0x%x is not MiB-aligned after the header section", fo, r.Length)
		}
		r.Off = int64(fo)
		for _, q := range out {
			if r.Off < q.Off+q.Length && q.Off < r.Off+r.Length {
				return nil, ferr(p, eo+16, name+r.Name+" region FileOffset", layer.ErrCorrupt,
					"region 0x%x+0x%x overlaps the %s region", r.Off, r.Length, q.Name)
			}
		}
		out = append(out, r)
	}
	if !haveBAT || !haveMeta {
		return nil, ferr(p, off+8, name+"entries", layer.ErrCorrupt, "no BAT or no metadata region")
	}
	return out, nil
}

func (l *Layer) parseMetadata() error {
	p := l.path
	mo := l.meta.Off
	b := make([]byte, metadataTableSize)
	if err := l.readAt(b, mo, "metadata table"); err != nil {
		return err
	}
	if string(b[:8]) != "metadata" {
		return ferr(p, mo, "metadata table Signature", layer.ErrCorrupt, "%q is not \"metadata\"", b[:8])
	}
	count := binary.LittleEndian.Uint16(b[10:])
	if count > maxMetadataEntries {
		return ferr(p, mo+10, "metadata table EntryCount", layer.ErrCorrupt, "%d entries; at most %d", count, maxMetadataEntries)
	}
	type key struct {
		id   GUID
		user bool
	}
	seen := map[key]bool{}
	known := map[GUID]*MetadataItem{}
	for i := 0; i < int(count); i++ {
		e := b[32+32*i:]
		eo := mo + 32 + 32*int64(i)
		it := MetadataItem{entryOff: eo}
		copy(it.ID[:], e)
		off := int64(binary.LittleEndian.Uint32(e[16:]))
		it.Length = int64(binary.LittleEndian.Uint32(e[20:]))
		fl := binary.LittleEndian.Uint32(e[24:])
		it.IsUser, it.IsVirtualDisk, it.IsRequired = fl&1 != 0, fl&2 != 0, fl&4 != 0
		k := key{it.ID, it.IsUser}
		if seen[k] {
			return ferr(p, eo, "metadata table entry", layer.ErrCorrupt, "item %s (user %v) is listed twice", it.ID, it.IsUser)
		}
		seen[k] = true
		if it.Length == 0 {
			if off != 0 {
				return ferr(p, eo+16, "metadata table entry Offset", layer.ErrCorrupt, "zero-length item %s at offset 0x%x, not 0", it.ID, off)
			}
		} else if off < metadataTableSize || it.Length > maxMetadataItem || off+it.Length > l.meta.Length {
			return ferr(p, eo+16, "metadata table entry Offset", layer.ErrCorrupt,
				"item %s at 0x%x+0x%x does not lie in the metadata region (0x%x bytes) after its table", it.ID, off, it.Length, l.meta.Length)
		}
		it.Off = mo + off
		it.Name = "unknown"
		if !it.IsUser {
			switch it.ID {
			case guidFileParameters:
				it.Name = "FileParameters"
			case guidVirtualDiskSize:
				it.Name = "VirtualDiskSize"
			case guidPage83Data:
				it.Name = "Page83Data"
			case guidLogicalSectorSize:
				it.Name = "LogicalSectorSize"
			case guidPhysicalSectorSize:
				it.Name = "PhysicalSectorSize"
			case guidParentLocator:
				it.Name = "ParentLocator"
			default:
				if it.IsRequired {
					return ferr(p, eo, "metadata table entry", layer.ErrUnsupported, "unknown required item %s", it.ID)
				}
			}
		} else {
			it.Name = "user"
		}
		l.metaItems = append(l.metaItems, it)
	}
	for i := range l.metaItems {
		if it := &l.metaItems[i]; !it.IsUser && it.Name != "unknown" {
			known[it.ID] = it
		}
	}
	item := func(id GUID, name string, size int64) ([]byte, *MetadataItem, error) {
		it := known[id]
		if it == nil {
			return nil, nil, ferr(p, mo, "metadata table", layer.ErrCorrupt, "required item %s (%s) is missing", name, id)
		}
		if it.Length < size {
			return nil, nil, ferr(p, it.entryOff+20, "metadata "+name+" Length", layer.ErrCorrupt, "%d bytes; want %d", it.Length, size)
		}
		v := make([]byte, size)
		if err := l.readAt(v, it.Off, "metadata "+name); err != nil {
			return nil, nil, err
		}
		return v, it, nil
	}
	v, it, err := item(guidFileParameters, "FileParameters", 8)
	if err != nil {
		return err
	}
	bs := binary.LittleEndian.Uint32(v)
	fl := binary.LittleEndian.Uint32(v[4:])
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return ferr(p, it.Off, "metadata FileParameters BlockSize", layer.ErrCorrupt, "%d is not a power of two from 1 MiB to 256 MiB", bs)
	}
	l.blockSize, l.leaveAlloc, l.hasParent = int64(bs), fl&1 != 0, fl&2 != 0
	if v, it, err = item(guidLogicalSectorSize, "LogicalSectorSize", 4); err != nil {
		return err
	}
	if s := binary.LittleEndian.Uint32(v); s != 512 && s != 4096 {
		return ferr(p, it.Off, "metadata LogicalSectorSize", layer.ErrCorrupt, "%d is neither 512 nor 4096", s)
	} else {
		l.lss = int(s)
	}
	if v, it, err = item(guidPhysicalSectorSize, "PhysicalSectorSize", 4); err != nil {
		return err
	}
	if s := binary.LittleEndian.Uint32(v); s != 512 && s != 4096 {
		return ferr(p, it.Off, "metadata PhysicalSectorSize", layer.ErrCorrupt, "%d is neither 512 nor 4096", s)
	} else {
		l.pss = int(s)
	}
	if v, it, err = item(guidVirtualDiskSize, "VirtualDiskSize", 8); err != nil {
		return err
	}
	sz := binary.LittleEndian.Uint64(v)
	if sz == 0 || sz > MaxSize || sz%uint64(l.lss) != 0 {
		return ferr(p, it.Off, "metadata VirtualDiskSize", layer.ErrCorrupt,
			"%d is not a non-zero multiple of the %d-byte logical sector of at most 64 TiB", sz, l.lss)
	}
	l.size = int64(sz)
	if v, _, err = item(guidPage83Data, "Page83Data", 16); err != nil {
		return err
	}
	copy(l.page83[:], v)
	if l.hasParent {
		if err := l.parseLocator(known[guidParentLocator]); err != nil {
			return err
		}
	}
	return nil
}

func (l *Layer) parseLocator(it *MetadataItem) error {
	p := l.path
	if it == nil {
		return ferr(p, l.meta.Off, "metadata table", layer.ErrCorrupt, "a differencing file (HasParent) without a ParentLocator item")
	}
	if it.Length < 20 {
		return ferr(p, it.entryOff+20, "metadata ParentLocator Length", layer.ErrCorrupt, "%d bytes; the header alone is 20", it.Length)
	}
	b := make([]byte, it.Length)
	if err := l.readAt(b, it.Off, "metadata ParentLocator"); err != nil {
		return err
	}
	copy(l.locatorType[:], b)
	if l.locatorType != guidVHDXLocatorType {
		return ferr(p, it.Off, "parent locator LocatorType", layer.ErrUnsupported, "%s is not the VHDX locator type %s", l.locatorType, guidVHDXLocatorType)
	}
	n := int64(binary.LittleEndian.Uint16(b[18:]))
	if 20+12*n > it.Length {
		return ferr(p, it.Off+18, "parent locator KeyValueCount", layer.ErrCorrupt, "%d entries do not fit in %d bytes", n, it.Length)
	}
	str := func(eo int64, off uint32, ln uint16, what string) (string, error) {
		o, e := int64(off), int64(off)+int64(ln)
		if ln == 0 || ln%2 != 0 || e > it.Length || o < 20+12*n {
			return "", ferr(p, eo, "parent locator entry "+what, layer.ErrCorrupt, "%d bytes at 0x%x do not lie in the %d-byte locator after its entries", ln, off, it.Length)
		}
		u := make([]uint16, ln/2)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(b[o+2*int64(i):])
		}
		return string(utf16.Decode(u)), nil
	}
	keys := map[string]bool{}
	for i := int64(0); i < n; i++ {
		e := b[20+12*i:]
		eo := it.Off + 20 + 12*i
		k, err := str(eo, binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint16(e[8:]), "key")
		if err != nil {
			return err
		}
		v, err := str(eo+4, binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint16(e[10:]), "value")
		if err != nil {
			return err
		}
		if keys[k] {
			return ferr(p, eo, "parent locator entry key", layer.ErrCorrupt, "key %q is listed twice", k)
		}
		keys[k] = true
		l.locator = append(l.locator, LocatorEntry{k, v})
		switch k {
		case "parent_linkage", "parent_linkage2":
			g, ok := parseGUID(v)
			if !ok {
				return ferr(p, eo+4, "parent locator "+k, layer.ErrCorrupt, "%q is not a GUID", v)
			}
			if k == "parent_linkage" {
				l.linkage = g
			} else {
				l.linkage2 = g
			}
		}
	}
	if !keys["parent_linkage"] {
		return ferr(p, it.Off, "parent locator", layer.ErrCorrupt, "no parent_linkage key")
	}
	if !keys["relative_path"] && !keys["volume_path"] && !keys["absolute_win32_path"] {
		return ferr(p, it.Off, "parent locator", layer.ErrCorrupt, "no relative_path, volume_path or absolute_win32_path key")
	}
	return nil
}

// Path is the file's absolute path.
func (l *Layer) Path() string { return l.path }

// Format returns "vhdx".
func (l *Layer) Format() string { return "vhdx" }

// Size is the virtual size in bytes.
func (l *Layer) Size() int64 { return l.size }

// SectorSize is the logical sector size (512 or 4096).
func (l *Layer) SectorSize() int { return l.lss }

// Close closes the file.
func (l *Layer) Close() error {
	err := l.trimReserve()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Warnings returns what the layer accepted but found doubtful (for now, a
// parent matched only through the deprecated parent_linkage2).
func (l *Layer) Warnings() []string {
	l.warnMu.Lock()
	defer l.warnMu.Unlock()
	return append([]string(nil), l.warnings...)
}
