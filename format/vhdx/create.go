package vhdx

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/vhdmount/vhdmount/internal/version"
)

// DefaultBlockSize is the block size of created images without a parent
// (Hyper-V's default for dynamic and differencing disks).
const DefaultBlockSize = 32 * miB

// Layout of created files, as Hyper-V lays them out: the log (1 MiB) at
// 1 MiB, the metadata region (1 MiB) at 2 MiB, the BAT at 3 MiB, payload
// blocks after the BAT.
const (
	createLogOff  = 1 * miB
	createLogLen  = 1 * miB
	createMetaOff = 2 * miB
	createMetaLen = 1 * miB
	createBATOff  = 3 * miB
)

// CreateOptions describe a new VHDX file.
type CreateOptions struct {
	// Fixed makes a fixed image: every block FULLY_PRESENT, stored in
	// order after the BAT, LeaveBlocksAllocated set. Not with Parent.
	Fixed bool
	// Size is the virtual size in bytes: a non-zero multiple of the logical
	// sector size, at most MaxSize. Must be 0 with Parent (a child gets its
	// parent's size).
	Size int64
	// BlockSize is a power of two from 1 MiB to 256 MiB; zero means the
	// parent's with Parent, else DefaultBlockSize.
	BlockSize int64
	// SectorSize is the logical sector size, 512 or 4096; zero means the
	// parent's with Parent, else 512. A child's must equal its parent's.
	SectorSize int
	// Parent makes a differencing image over the VHDX file at this path.
	Parent string
	// Creator is written in the file type identifier; empty means
	// "vhdmount" and the build's version.
	Creator string
}

// layout is the geometry and placement of a new file.
type layout struct {
	size, bs     int64
	lss, pss     int
	fixed        bool
	parent       *parentInfo
	chunkRatio   int64
	nblocks      int64
	batEntries   int64
	batLen       int64
	nchunks      int64 // sector bitmap blocks (differencing only)
	payloadOff   int64
	creator      string
	page83       GUID
	fileW, dataW GUID
}

func createGUID() GUID {
	g, _ := parseGUID(uuid.New().String()) // a well-formed literal: cannot fail
	return g
}

func planLayout(o CreateOptions, p *parentInfo) (*layout, error) {
	if p != nil {
		if o.Fixed {
			return nil, errors.New("vhdx: a differencing image cannot be fixed")
		}
		if o.Size != 0 && o.Size != p.size {
			return nil, fmt.Errorf("vhdx: a differencing image gets its parent's size (%d bytes), not %d", p.size, o.Size)
		}
		if o.SectorSize != 0 && o.SectorSize != p.lss {
			return nil, fmt.Errorf("vhdx: parent %s has %d-byte logical sectors; a child must have the same, not %d", p.abs, p.lss, o.SectorSize)
		}
		o.Size, o.SectorSize = p.size, p.lss
		if o.BlockSize == 0 {
			o.BlockSize = p.bs
		}
	}
	if o.SectorSize == 0 {
		o.SectorSize = 512
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.SectorSize != 512 && o.SectorSize != 4096 {
		return nil, fmt.Errorf("vhdx: logical sector size %d: want 512 or 4096", o.SectorSize)
	}
	if bs := o.BlockSize; bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("vhdx: block size %d is not a power of two from 1 MiB to 256 MiB", bs)
	}
	if o.Size <= 0 || o.Size > MaxSize || o.Size%int64(o.SectorSize) != 0 {
		return nil, fmt.Errorf("vhdx: size %d is not a positive multiple of the %d-byte sector up to %d (64 TiB)", o.Size, o.SectorSize, int64(MaxSize))
	}
	l := &layout{size: o.Size, bs: o.BlockSize, lss: o.SectorSize, pss: 4096, fixed: o.Fixed, parent: p,
		creator: o.Creator, page83: createGUID(), fileW: createGUID(), dataW: createGUID()}
	if p != nil {
		l.pss = p.pss
	}
	if l.creator == "" {
		l.creator = "vhdmount " + version.String()
	}
	// [MS-VHDX] 2.5: chunk ratio, and the BAT's entries with the fixed
	// stride (vhdx-notes policy 4): a differencing file holds a sector
	// bitmap entry after every chunk, the last partial one included.
	l.chunkRatio = sectorsPerChnk * int64(l.lss) / l.bs
	l.nblocks = (l.size + l.bs - 1) / l.bs
	last := l.nblocks - 1
	l.batEntries = last + last/l.chunkRatio + 1
	if p != nil {
		l.batEntries = (last/l.chunkRatio + 1) * (l.chunkRatio + 1)
	}
	l.batLen = (l.batEntries*8 + miB - 1) / miB * miB
	l.payloadOff = createBATOff + l.batLen
	if p != nil {
		// Every chunk's sector bitmap block is allocated (all zeros:
		// every sector from the parent, and a hole in the file).
		// libvhdi 20210425 reads a NOT_PRESENT sector bitmap entry's
		// file offset 0 as the bitmap, so it would read the file
		// identifier as bits; the cost is 1 MiB of apparent size per
		// chunk (4 GiB of disk with 512-byte sectors), no space.
		l.nchunks = last/l.chunkRatio + 1
		l.payloadOff += l.nchunks * miB
	}
	return l, nil
}

// headerSection returns the first MiB of the file: identifier, both headers
// (sequence numbers 1 and 2, identical otherwise, as Hyper-V leaves them)
// and both region tables.
func (l *layout) headerSection() []byte {
	b := make([]byte, headerAreaEnd)
	copy(b[fileIDOff:], encodeFileID(l.creator))
	for i, off := range []int{header1Off, header2Off} {
		h := &Header{SequenceNumber: uint64(i + 1), FileWriteGUID: l.fileW, DataWriteGUID: l.dataW,
			Version: 1, LogLength: createLogLen, LogOffset: createLogOff}
		copy(b[off:], h.encode())
	}
	rt := encodeRegionTable([]regionEntry{
		{guidBATRegion, createBATOff, l.batLen, true},
		{guidMetadataRegion, createMetaOff, createMetaLen, true},
	})
	copy(b[region1Off:], rt)
	copy(b[region2Off:], rt)
	return b
}

// metadata returns the start of the metadata region, items as Windows writes
// them: File Parameters (required), Virtual Disk Size, Logical and Physical
// Sector Size, Page 83 Data (required, virtual disk), Parent Locator
// (required) for a child.
func (l *layout) metadata() []byte {
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	fp := u32(uint32(l.bs))
	var flags uint32
	if l.fixed {
		flags |= 1 // LeaveBlocksAllocated
	}
	if l.parent != nil {
		flags |= 2 // HasParent
	}
	fp = binary.LittleEndian.AppendUint32(fp, flags)
	vd := uint32(metaIsVirtualDisk | metaIsRequired)
	items := []metaItem{
		{guidFileParameters, metaIsRequired, fp},
		{guidVirtualDiskSize, vd, binary.LittleEndian.AppendUint64(nil, uint64(l.size))},
		{guidLogicalSectorSize, vd, u32(uint32(l.lss))},
		{guidPhysicalSectorSize, vd, u32(uint32(l.pss))},
		{guidPage83Data, vd, l.page83[:]},
	}
	if l.parent != nil {
		items = append(items, metaItem{guidParentLocator, metaIsRequired, encodeLocator(l.parent.locator)})
	}
	return encodeMetadata(items)
}

// WriteFile is what a Writer writes: an *os.File fits.
type WriteFile interface {
	io.WriterAt
	Truncate(size int64) error
}

// Writer writes a new fixed or dynamic VHDX file: NewWriter writes the
// header section and the metadata, the caller writes payload bytes at the
// file offsets Block returns, and Finish writes the BAT and sets the file's
// size. Never-written ranges of the file are left as holes (they read as
// zeros), so blocks the caller never asks for stay NOT_PRESENT and a
// payload block's all-zero parts take no space.
type Writer struct {
	f     WriteFile
	l     *layout
	mu    sync.Mutex
	alloc []uint32 // payload block → file offset in MiB, 0 if not stored (dynamic)
	next  int64    // file offset of the next payload block
}

// NewWriter starts a new image in f, an empty file, as o says; o.Parent
// must be empty.
func NewWriter(f WriteFile, o CreateOptions) (*Writer, error) {
	if o.Parent != "" {
		return nil, errors.New("vhdx: NewWriter does not write differencing images")
	}
	l, err := planLayout(o, nil)
	if err != nil {
		return nil, err
	}
	return newWriter(f, l)
}

func newWriter(f WriteFile, l *layout) (*Writer, error) {
	w := &Writer{f: f, l: l, next: l.payloadOff}
	if _, err := f.WriteAt(l.headerSection(), 0); err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(l.metadata(), createMetaOff); err != nil {
		return nil, err
	}
	return w, nil
}

// Size is the virtual size.
func (w *Writer) Size() int64 { return w.l.size }

// BlockSize is the payload block size.
func (w *Writer) BlockSize() int64 { return w.l.bs }

// Block returns the file offset of payload block b (virtual bytes
// [b×BlockSize, (b+1)×BlockSize)). In a dynamic image the block is
// allocated at the end of the file on its first call, so blocks are laid
// out in the order of the first calls. Safe for concurrent use.
func (w *Writer) Block(b int64) int64 {
	if w.l.fixed {
		return w.l.payloadOff + b*w.l.bs
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if b < int64(len(w.alloc)) && w.alloc[b] != 0 {
		return int64(w.alloc[b]) * miB
	}
	if b >= int64(len(w.alloc)) {
		w.alloc = append(w.alloc, make([]uint32, b+1-int64(len(w.alloc)))...)
	}
	fo := w.next
	w.alloc[b] = uint32(fo / miB)
	w.next += w.l.bs
	return fo
}

// batEntry returns BAT entry idx: payload blocks FULLY_PRESENT where
// stored, NOT_PRESENT elsewhere; sector bitmap entries PRESENT in a
// differencing file (stored after the BAT, in chunk order), else
// NOT_PRESENT.
func (w *Writer) batEntry(idx int64) uint64 {
	r := w.l.chunkRatio
	if idx%(r+1) == r {
		if w.l.parent != nil {
			return uint64(createBATOff+w.l.batLen+idx/(r+1)*miB) | stFullyPresent
		}
		return stNotPresent
	}
	b := idx - idx/(r+1)
	if w.l.fixed {
		return uint64(w.l.payloadOff+b*w.l.bs) | stFullyPresent
	}
	if b < int64(len(w.alloc)) && w.alloc[b] != 0 {
		return uint64(w.alloc[b])*miB | stFullyPresent
	}
	return stNotPresent
}

// Finish writes the BAT (all-zero pages left as holes) and sets the file's
// size: the end of the last block (a fixed image's last block is whole).
func (w *Writer) Finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	const page = miB / 8
	buf := make([]byte, miB)
	for first := int64(0); first < w.l.batEntries; first += page {
		n := min(page, w.l.batEntries-first)
		nz := false
		for i := int64(0); i < n; i++ {
			e := w.batEntry(first + i)
			binary.LittleEndian.PutUint64(buf[8*i:], e)
			nz = nz || e != 0
		}
		if nz {
			if _, err := w.f.WriteAt(buf[:8*n], createBATOff+8*first); err != nil {
				return err
			}
		}
	}
	end := w.next
	if w.l.fixed {
		end = w.l.payloadOff + w.l.nblocks*w.l.bs
	}
	return w.f.Truncate(end)
}

// parentInfo is what a child's metadata needs from its parent.
type parentInfo struct {
	abs      string
	size, bs int64
	lss, pss int
	locator  []LocatorEntry
}

// readParent opens parent (read-only, this file only) to learn its identity
// and geometry, and builds the child's locator: parent_linkage (the parent's
// current DataWriteGuid), relative_path (from the child's directory, in
// Windows form: `.\name` as Windows writes a parent beside its child,
// `..\dir\name` for one elsewhere), absolute_win32_path (the absolute Linux path with
// `\` separators: there is no drive letter or volume to name). volume_path
// is not written: no Windows volume is known here, and parent_linkage2 is
// deprecated.
func readParent(child, parent string) (*parentInfo, error) {
	fi, err := os.Stat(parent)
	if err != nil {
		return nil, fmt.Errorf("vhdx: parent: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("vhdx: parent %s is not a regular file", parent)
	}
	f, err := openReadNoBlock(parent)
	if err != nil {
		return nil, fmt.Errorf("vhdx: parent: %w", err)
	}
	defer f.Close()
	var id [8]byte
	if n, _ := f.ReadAt(id[:], 0); n < len(id) || !Probe(id[:]) {
		what := "not a VHDX file"
		var tail [8]byte
		if string(id[:]) == "conectix" || (fi.Size() >= 512 && readN(f, tail[:], fi.Size()-512) && string(tail[:]) == "conectix") {
			what = "a VHD; [MS-VHDX] allows only a VHDX parent for a VHDX child"
		}
		return nil, fmt.Errorf("vhdx: parent %s is %s", parent, what)
	}
	p, err := Open(parent, f, Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	dw := p.headers[p.cur].DataWriteGUID
	if dw.IsZero() {
		return nil, fmt.Errorf("vhdx: parent %s has an all-zero DataWriteGuid, which no child can link to", p.path)
	}
	absChild, err := filepath.Abs(child)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(filepath.Dir(absChild), p.path)
	if err != nil {
		return nil, fmt.Errorf("vhdx: cannot name %s relative to %s: %w", p.path, absChild, err)
	}
	if strings.Contains(p.path, `\`) {
		return nil, fmt.Errorf("vhdx: parent path %q holds a backslash, which a parent locator cannot express", p.path)
	}
	win := func(s string) string { return strings.ReplaceAll(s, "/", `\`) }
	relWin := win(rel)
	if rel != ".." && !strings.HasPrefix(rel, "../") {
		relWin = `.\` + relWin // as Windows writes a parent beside the child
	}
	return &parentInfo{abs: p.path, size: p.size, bs: p.blockSize, lss: p.lss, pss: p.pss,
		locator: []LocatorEntry{
			{"parent_linkage", "{" + dw.String() + "}"},
			{"relative_path", relWin},
			{"absolute_win32_path", win(p.path)},
		}}, nil
}

func readN(f *os.File, b []byte, off int64) bool {
	n, _ := f.ReadAt(b, off)
	return n == len(b)
}

// Create writes a new, empty VHDX file at path: fixed, dynamic, or
// differencing over o.Parent. It never replaces an existing file (a symbolic
// link, dangling or not, counts as one): the image is written to a hidden
// temporary file beside path and linked into place only when complete.
// A fixed image's payload is allocated with fallocate where the filesystem
// supports it (unwritten extents: fast, read as zeros); elsewhere it is left
// sparse.
func Create(path string, o CreateOptions) (err error) {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("vhdx: %s: %w", path, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vhdx: %w", err)
	}
	var p *parentInfo
	if o.Parent != "" {
		if p, err = readParent(path, o.Parent); err != nil {
			return err
		}
	}
	l, err := planLayout(o, p)
	if err != nil {
		return err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	dir, base := filepath.Split(path)
	tmp := filepath.Join(dir, "."+base+".vhdx-create-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()
	wrap := func(err error) error {
		return fmt.Errorf("vhdx: %s: %s", path, strings.ReplaceAll(err.Error(), tmp, path))
	}
	w, err := newWriter(f, l)
	if err != nil {
		return wrap(err)
	}
	if l.fixed {
		if err := preallocate(f, l.payloadOff, l.nblocks*l.bs); err != nil {
			return wrap(fmt.Errorf("allocating the %d-byte payload of a fixed image: %w", l.nblocks*l.bs, err))
		}
	}
	if err := w.Finish(); err != nil {
		return wrap(err)
	}
	if err := f.Sync(); err != nil {
		return wrap(err)
	}
	err, f = f.Close(), nil
	if err != nil {
		return wrap(err)
	}
	return linkInto(tmp, path)
}

// linkInto moves the complete file tmp to path without replacing a file
// made at path meanwhile: a hard link (which fails if path exists), or on a
// filesystem without hard links a rename after checking path is still free.
func linkInto(tmp, path string) error {
	if err := os.Link(tmp, path); err == nil {
		os.Remove(tmp)
		return nil
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vhdx: %s: %w (created meanwhile)", path, os.ErrExist)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("vhdx: %s: %w", path, err)
	}
	return nil
}
