package vhdx

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/vhdmount/vhdmount/format/layer"
)

// HeaderInfo describes one of the two headers.
type HeaderInfo struct {
	Index   int     `json:"index"` // 1 or 2
	Valid   bool    `json:"valid"`
	Current bool    `json:"current"`
	Error   string  `json:"error,omitempty"`
	Header  *Header `json:"header,omitempty"`
}

// LogInfo describes the log and what an open did with it.
type LogInfo struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	// State is "empty" (no log GUID in the header) or "replayed in memory"
	// (a pending log: the file on disk still needs the replay).
	State             string `json:"state"`
	EntriesReplayed   int    `json:"entries_replayed"`
	Descriptors       int    `json:"descriptors,omitempty"`
	FirstSequence     uint64 `json:"first_sequence,omitempty"`
	LastSequence      uint64 `json:"last_sequence,omitempty"`
	FlushedFileOffset int64  `json:"flushed_file_offset,omitempty"`
	LastFileOffset    int64  `json:"last_file_offset,omitempty"`
}

// BATCounts counts the BAT entries by state.
type BATCounts struct {
	NotPresent       int64 `json:"not_present"`
	Undefined        int64 `json:"undefined"`
	Zero             int64 `json:"zero"`
	Unmapped         int64 `json:"unmapped"`
	FullyPresent     int64 `json:"fully_present"`
	PartiallyPresent int64 `json:"partially_present"`
	Invalid          int64 `json:"invalid"`
	BitmapsPresent   int64 `json:"sector_bitmaps_present"`
	BitmapsAbsent    int64 `json:"sector_bitmaps_not_present"`
	BitmapsInvalid   int64 `json:"sector_bitmaps_invalid"`
}

// ParentLocatorInfo is the parent locator of a differencing file.
type ParentLocatorInfo struct {
	Type    GUID           `json:"type"`
	Entries []LocatorEntry `json:"entries"`
}

// Info describes a VHDX file, for `vhd info`.
type Info struct {
	Path                string             `json:"path"`
	Format              string             `json:"format"`
	Type                string             `json:"type"` // fixed, dynamic or differencing
	Creator             string             `json:"creator"`
	FileSize            int64              `json:"file_size"`
	Size                int64              `json:"virtual_size"`
	BlockSize           int64              `json:"block_size"`
	LogicalSectorSize   int                `json:"logical_sector_size"`
	PhysicalSectorSize  int                `json:"physical_sector_size"`
	LeaveBlockAllocated bool               `json:"leave_block_allocated"`
	HasParent           bool               `json:"has_parent"`
	Page83Data          GUID               `json:"page83_data"`
	Headers             []HeaderInfo       `json:"headers"`
	Log                 LogInfo            `json:"log"`
	RegionTable         int                `json:"region_table"` // the copy used, 1 or 2
	RegionTable1Error   string             `json:"region_table_1_error,omitempty"`
	Regions             []Region           `json:"regions"`
	Metadata            []MetadataItem     `json:"metadata"`
	Blocks              int64              `json:"blocks"`
	ChunkRatio          int64              `json:"chunk_ratio"`
	BATEntries          int64              `json:"bat_entries"`
	BAT                 BATCounts          `json:"bat"`
	ParentLocator       *ParentLocatorInfo `json:"parent_locator,omitempty"`
	Warnings            []string           `json:"warnings,omitempty"`
}

// Type returns "fixed", "dynamic" or "differencing".
func (l *Layer) Type() string {
	switch {
	case l.hasParent:
		return "differencing"
	case l.leaveAlloc:
		return "fixed"
	}
	return "dynamic"
}

// LogReplayed reports whether the open found a pending log and replayed it
// in memory (the file on disk is unchanged and still needs the replay).
func (l *Layer) LogReplayed() bool { return l.logReplayed != nil }

// Info describes the file. It reads the whole BAT (in pieces) to count
// the entries by state.
func (l *Layer) Info() (*Info, error) {
	in := &Info{Path: l.path, Format: "vhdx", Type: l.Type(), Creator: l.creator, FileSize: l.fileSize,
		Size: l.size, BlockSize: l.blockSize, LogicalSectorSize: l.lss, PhysicalSectorSize: l.pss,
		LeaveBlockAllocated: l.leaveAlloc, HasParent: l.hasParent, Page83Data: l.page83,
		RegionTable: l.regionCopy, Regions: l.regions, Metadata: l.metaItems,
		Blocks: l.nblocks, ChunkRatio: l.chunkRatio, BATEntries: l.batEntries, Warnings: l.Warnings()}
	hs, herrs, cur := l.headerState()
	if l.w != nil {
		in.FileSize = l.effSize.Load() // as extended by this session's writes
	}
	for i := range hs {
		hi := HeaderInfo{Index: i + 1, Valid: hs[i] != nil, Current: i == cur, Header: hs[i]}
		if herrs[i] != nil {
			hi.Error = herrs[i].Error()
		}
		in.Headers = append(in.Headers, hi)
	}
	if l.regionErr1 != nil {
		in.RegionTable1Error = l.regionErr1.Error()
	}
	h := hs[cur]
	in.Log = LogInfo{Offset: int64(h.LogOffset), Length: int64(h.LogLength), State: "empty"}
	if r := l.logReplayed; r != nil {
		in.Log.State = "replayed in memory"
		in.Log.EntriesReplayed, in.Log.Descriptors = r.entries, r.descriptors
		in.Log.FirstSequence, in.Log.LastSequence = r.firstSeq, r.lastSeq
		in.Log.FlushedFileOffset, in.Log.LastFileOffset = r.flushedFileOff, r.lastFileOffset
	}
	if l.hasParent {
		in.ParentLocator = &ParentLocatorInfo{Type: l.locatorType, Entries: l.locator}
	}
	err := l.scanBAT(func(idx int64, e uint64, bitmap bool) {
		c := &in.BAT
		if bitmap {
			switch e & 7 {
			case stNotPresent:
				c.BitmapsAbsent++
			case stFullyPresent:
				c.BitmapsPresent++
			default:
				c.BitmapsInvalid++
			}
			return
		}
		switch e & 7 {
		case stNotPresent:
			c.NotPresent++
		case stUndefined:
			c.Undefined++
		case stZero:
			c.Zero++
		case stUnmapped:
			c.Unmapped++
		case stFullyPresent:
			c.FullyPresent++
		case stPartiallyPresent:
			c.PartiallyPresent++
		default:
			c.Invalid++
		}
	})
	return in, err
}

// scanBAT calls fn for every BAT entry the disk uses, in order, reading the
// BAT in 1 MiB pieces. bitmap says whether the entry is a sector bitmap
// entry; payload entries past the last block are skipped.
func (l *Layer) scanBAT(fn func(idx int64, e uint64, bitmap bool)) error {
	const piece = miB / 8
	buf := make([]byte, miB)
	for start := int64(0); start < l.batEntries; start += piece {
		n := min(piece, l.batEntries-start)
		if err := l.readAt(buf[:n*8], l.bat.Off+start*8, "BAT"); err != nil {
			return err
		}
		for k := int64(0); k < n; k++ {
			idx := start + k
			isBitmap := idx%(l.chunkRatio+1) == l.chunkRatio
			if !isBitmap {
				if b := idx - idx/(l.chunkRatio+1); b >= l.nblocks {
					continue
				}
			}
			fn(idx, binary.LittleEndian.Uint64(buf[8*k:]), isBitmap)
		}
	}
	return nil
}

// headerState returns the headers, why each is invalid, and the current
// one's index; a writer's header update changes them.
func (l *Layer) headerState() ([2]*Header, [2]error, int) {
	if l.w != nil {
		l.w.mu.Lock()
		defer l.w.mu.Unlock()
	}
	return l.headers, l.headerErrs, l.cur
}

// Problem is one thing Check found wrong.
type Problem struct {
	Path string `json:"path"`
	Off  int64  `json:"offset"` // file offset of the structure or field
	Msg  string `json:"message"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: at 0x%x: %s", p.Path, p.Off, p.Msg) }

// maxExamples is how many problems of one kind Check lists; the rest are
// counted.
const maxExamples = 10

type problems struct {
	path   string
	list   []Problem
	counts map[string]int
	order  []string
}

func (ps *problems) add(kind string, off int64, msg string, args ...any) {
	if ps.counts[kind] == 0 {
		ps.order = append(ps.order, kind)
	}
	ps.counts[kind]++
	if ps.counts[kind] <= maxExamples {
		ps.list = append(ps.list, Problem{ps.path, off, fmt.Sprintf(msg, args...)})
	}
}

func (ps *problems) done() []Problem {
	for _, k := range ps.order {
		if n := ps.counts[k]; n > maxExamples {
			ps.list = append(ps.list, Problem{ps.path, 0, fmt.Sprintf("%d more: %s", n-maxExamples, k)})
		}
	}
	return ps.list
}

// Check verifies the structure of the file beyond what Open needs: both
// headers, both region tables, the pending log, metadata items, every BAT
// entry, and that no payload or sector bitmap block overlaps another, the
// metadata or the end of the file. Each kind of problem is listed up to
// 10 times, then counted.
func (l *Layer) Check() []Problem { return l.check(false) }

// check is Check; forWrite leaves out what a read-write open mends before it
// writes anything else: a pending log (replayed into the file) and one
// invalid header (never the current one; the first write's header update
// rewrites that slot first, and a crash during our own header update leaves
// exactly this state).
func (l *Layer) check(forWrite bool) []Problem {
	ps := &problems{path: l.path, counts: map[string]int{}}
	hs, herrs, cur := l.headerState()
	for i, err := range herrs {
		if err != nil && !forWrite {
			ps.add("header", int64(header1Off+i*(header2Off-header1Off)), "header %d is not valid (the other one is used): %v", i+1, err)
		}
	}
	if l.regionErr1 != nil {
		ps.add("region table", region1Off, "region table 1 is not valid (copy 2 is used): %v", l.regionErr1)
	} else if _, err := l.parseRegionTable(2, region2Off); err != nil {
		ps.add("region table", region2Off, "region table 2 is not valid: %v", err)
	}
	h := hs[cur]
	if r := l.logReplayed; r != nil {
		if !forWrite {
			ps.add("log", int64(h.LogOffset), "the log holds %d pending entries (sequence %d-%d): replayed in memory only; the file needs a replay before it is written", r.entries, r.firstSeq, r.lastSeq)
		}
	} else if h.LogLength > 0 && int64(h.LogOffset)+int64(h.LogLength) > l.fileSize {
		ps.add("log", h.Off+72, "the log 0x%x+0x%x lies past the end of the file (%d bytes)", h.LogOffset, h.LogLength, l.fileSize)
	}
	// Metadata items against each other and the table.
	items := append([]MetadataItem(nil), l.metaItems...)
	sort.Slice(items, func(i, j int) bool { return items[i].Off < items[j].Off })
	var prev *MetadataItem
	for i := range items {
		it := &items[i]
		if it.Length == 0 {
			continue
		}
		if prev != nil && it.Off < prev.Off+prev.Length {
			ps.add("metadata", it.entryOff, "metadata item %s (%s) at 0x%x+0x%x overlaps item %s", it.ID, it.Name, it.Off, it.Length, prev.Name)
		}
		if prev == nil || it.Off+it.Length > prev.Off+prev.Length {
			prev = it
		}
	}
	// BAT entries and the blocks they point at.
	used := map[int64]uint64{} // bit per MiB of the file held by a block
	claim := func(idx, fo, need int64, what string) {
		for u := fo >> 20; u < (fo+need+miB-1)>>20; u++ {
			w, bit := u>>6, uint64(1)<<(u&63)
			if used[w]&bit != 0 {
				ps.add("overlap", l.bat.Off+8*idx, "%s at 0x%x overlaps another block at 0x%x", what, fo, u<<20)
				return
			}
			used[w] |= bit
		}
	}
	err := l.scanBAT(func(idx int64, e uint64, bitmap bool) {
		off := l.bat.Off + 8*idx
		if e&0xFFFF8 != 0 {
			ps.add("reserved", off, "BAT entry %d has reserved bits set (0x%x)", idx, e)
		}
		st := e & 7
		if bitmap {
			c := idx / (l.chunkRatio + 1)
			switch st {
			case stNotPresent:
			case stFullyPresent:
				what := thing{"sector bitmap block of chunk", c}
				if fo, err := l.blockFileOff(idx, e, miB, what); err != nil {
					ps.add("bitmap", off, "%v", err)
				} else {
					claim(idx, fo, miB, what.String())
				}
			default:
				ps.add("bitmap", off, "sector bitmap entry %d of chunk %d has the invalid state %d", idx, c, st)
			}
			return
		}
		b := idx - idx/(l.chunkRatio+1)
		switch st {
		case stNotPresent, stUndefined, stZero, stUnmapped:
		case stFullyPresent, stPartiallyPresent:
			what := thing{"payload block", b}
			need := min(l.blockSize, l.size-b*l.blockSize)
			if fo, err := l.blockFileOff(idx, e, need, what); err != nil {
				ps.add("block", off, "%v", err)
			} else {
				claim(idx, fo, need, what.String())
			}
			if st == stPartiallyPresent {
				if !l.hasParent {
					ps.add("partial", off, "payload block %d is PARTIALLY_PRESENT in a file without a parent", b)
				} else if _, err := l.blockBitmap(b); err != nil {
					ps.add("partial", off, "payload block %d is PARTIALLY_PRESENT: %v", b, err)
				}
			}
		default:
			ps.add("state", off, "payload block %d has the invalid state %d", b, st)
		}
	})
	if err != nil {
		ps.add("BAT", l.bat.Off, "reading the BAT: %v", err)
	}
	return ps.done()
}

var _ layer.Layer = (*Layer)(nil)
