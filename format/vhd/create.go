package vhd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Creator identifies images this package writes: creator application "vhdm",
// version 1.0, host OS "Wi2k" (the only value Windows tools expect; qemu and
// vhd-lib write it too).
var (
	creatorApp     = [4]byte{'v', 'h', 'd', 'm'}
	creatorVersion = uint32(1 << 16)
	creatorHostOS  = [4]byte{'W', 'i', '2', 'k'}
)

// DefaultBlockSize is the block size of created dynamic and differencing disks.
const DefaultBlockSize = 2 << 20

// locatorSpace is the room reserved for each parent locator, so a later
// rewrite of a longer path fits. Stored in bytes, as Windows does.
const locatorSpace = 4096

// CreateOptions describe a new image.
type CreateOptions struct {
	// Type is TypeFixed or TypeDynamic. It is ignored when Parent is set.
	Type int
	// Size is the virtual size in bytes: a multiple of 512, at most
	// MaxVirtualSize. Ignored when Parent is set (the parent's size is used).
	Size int64
	// BlockSize of dynamic and differencing disks: a power of two from 512
	// bytes to 256 MiB. Zero means the parent's block size for a
	// differencing disk over a dynamic or differencing parent (tools such as
	// vhd-lib and Xen Orchestra refuse to merge chains of mixed block sizes),
	// else DefaultBlockSize.
	BlockSize int64
	// Parent makes a differencing disk over the image at this path.
	Parent string
	// UniqueID of the new image; zero means a random one.
	UniqueID uuid.UUID
	// Time stamped in the footer; zero means now.
	Time time.Time
}

// Create writes a new, empty image at path. It refuses to overwrite an
// existing file, and removes what it wrote if it fails. For a differencing
// disk (o.Parent set), parentTop is the top layer of the parent's chain, as
// opened (read-only) from o.Parent: the new disk records its unique id and
// takes its size.
func Create(path string, o CreateOptions, parentTop *Layer) (err error) {
	var parent *parentInfo
	if o.Parent != "" {
		if parentTop == nil {
			return fmt.Errorf("vhd: %s: BUG: no parent layer given for parent %s", path, o.Parent)
		}
		if parent, err = readParentInfo(path, parentTop); err != nil {
			return err
		}
		o.Type, o.Size = TypeDifferencing, parent.size
		if bs := parent.blockSize; o.BlockSize == 0 && bs >= SectorSize && bs <= maxBlockSize && bs&(bs-1) == 0 {
			o.BlockSize = bs
		}
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < SectorSize || o.BlockSize > maxBlockSize || o.BlockSize&(o.BlockSize-1) != 0 {
		return fmt.Errorf("vhd: block size %d is not a power of two from 512 to %d", o.BlockSize, maxBlockSize)
	}
	if o.UniqueID == (uuid.UUID{}) {
		o.UniqueID = uuid.New()
	}
	if o.Time.IsZero() {
		o.Time = time.Now()
	}
	if o.Size <= 0 || o.Size%SectorSize != 0 || o.Size > MaxVirtualSize {
		return fmt.Errorf("vhd: size %d is not a positive multiple of 512 up to %d (2040 GiB)", o.Size, int64(MaxVirtualSize))
	}
	if o.Type != TypeFixed && o.Type != TypeDynamic && o.Type != TypeDifferencing {
		return fmt.Errorf("vhd: cannot create disk type %d", o.Type)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("vhd: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("vhd: %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	ft := newFooter(o)
	if o.Type == TypeFixed {
		raw, _ := ft.MarshalBinary()
		if err := f.Truncate(o.Size); err != nil {
			return fmt.Errorf("vhd: %s: %w", path, err)
		}
		if _, err := f.WriteAt(raw, o.Size); err != nil {
			return fmt.Errorf("vhd: %s: %w", path, err)
		}
		return f.Sync()
	}
	img, err := layoutDynamic(ft, o, parent)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(img, 0); err != nil {
		return fmt.Errorf("vhd: %s: %w", path, err)
	}
	return f.Sync()
}

func newFooter(o CreateOptions) *Footer {
	ft := &Footer{
		Features:       featureReserve,
		FormatVersion:  formatVersion,
		DataOffset:     noDataOffset,
		Timestamp:      TimeToVHD(o.Time),
		CreatorApp:     creatorApp,
		CreatorVersion: creatorVersion,
		CreatorHostOS:  creatorHostOS,
		OriginalSize:   uint64(o.Size),
		CurrentSize:    uint64(o.Size),
		DiskType:       uint32(o.Type),
		UniqueID:       o.UniqueID,
	}
	copy(ft.Cookie[:], footerCookie)
	ft.Cylinders, ft.Heads, ft.SectorsPerTrack = Geometry(o.Size)
	if o.Type != TypeFixed {
		ft.DataOffset = footerSize
	}
	return ft
}

// layoutDynamic returns the whole initial file of a dynamic or differencing
// disk: footer copy, header, BAT (all unallocated), locators, footer.
func layoutDynamic(ft *Footer, o CreateOptions, parent *parentInfo) ([]byte, error) {
	entries := (o.Size + o.BlockSize - 1) / o.BlockSize
	batOff := int64(footerSize + headerSize)
	batLen := roundUp(entries*4, SectorSize)
	end := batOff + batLen
	h := &DynamicHeader{
		DataOffset:      noDataOffset,
		TableOffset:     uint64(batOff),
		HeaderVersion:   headerVersion,
		MaxTableEntries: uint32(entries),
		BlockSize:       uint32(o.BlockSize),
	}
	copy(h.Cookie[:], headerCookie)
	var locData [][]byte
	if parent != nil {
		h.ParentUniqueID = parent.uuid
		h.ParentTimestamp = TimeToVHD(parent.mtime)
		// The relative path, else the absolute one (a temporary child far
		// from its parent); the locators carry both.
		name := encodeUTF16(parent.rel, binary.BigEndian)
		if len(name) > len(h.ParentUnicodeName) {
			name = encodeUTF16(parent.abs, binary.BigEndian)
		}
		if len(name) > len(h.ParentUnicodeName) {
			return nil, fmt.Errorf("vhd: parent path %q is longer than the header's 256 UTF-16 units, relative or absolute; put the child nearer its parent", parent.rel)
		}
		copy(h.ParentUnicodeName[:], name)
		payloads := []struct {
			code [4]byte
			data []byte
		}{
			{codeW2ku, encodeUTF16(strings.ReplaceAll(parent.abs, "/", `\`), binary.LittleEndian)},
			{codeW2ru, encodeUTF16(`.\`+strings.ReplaceAll(parent.rel, "/", `\`), binary.LittleEndian)},
			{codeMacX, []byte((&url.URL{Scheme: "file", Path: parent.abs}).String())},
		}
		for i, p := range payloads {
			space := max(locatorSpace, roundUp(int64(len(p.data)), SectorSize))
			h.Locators[i] = ParentLocator{Code: p.code, DataSpace: uint32(space), DataLength: uint32(len(p.data)), DataOffset: uint64(end)}
			locData = append(locData, p.data)
			end += space
		}
	}
	img := make([]byte, end+footerSize)
	fraw, _ := ft.MarshalBinary()
	hraw, _ := h.MarshalBinary()
	copy(img, fraw)
	copy(img[footerSize:], hraw)
	for i := batOff; i < batOff+batLen; i++ {
		img[i] = 0xFF
	}
	for i, d := range locData {
		copy(img[h.Locators[i].DataOffset:], d)
	}
	copy(img[end:], fraw)
	return img, nil
}

type parentInfo struct {
	uuid      uuid.UUID
	size      int64
	blockSize int64 // 0 for a fixed parent
	mtime     time.Time
	abs, rel  string // absolute path, and path relative to the child's directory
}

// readParentInfo checks the would-be parent (the top layer of its chain)
// and learns its unique id and size.
func readParentInfo(child string, top *Layer) (*parentInfo, error) {
	fi, err := top.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vhd: %s: %w", top.path, err)
	}
	absChild, err := filepath.Abs(child)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(filepath.Dir(absChild), top.path)
	if err != nil {
		return nil, fmt.Errorf("vhd: cannot name %s relative to %s: %w", top.path, absChild, err)
	}
	if _, err := os.Stat(absChild); err == nil {
		return nil, fmt.Errorf("vhd: %s: %w", child, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vhd: %w", err)
	}
	return &parentInfo{uuid: top.footer.UniqueID, size: top.size, blockSize: top.blockSize, mtime: fi.ModTime(), abs: top.path, rel: rel}, nil
}
