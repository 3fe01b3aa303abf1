package vhd

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// Problem is one structural problem found by Check.
type Problem struct {
	Path string // the file
	Off  int64  // absolute offset of the field at fault
	Msg  string
}

// MaxProblemExamples is how many problems of one kind Check lists; the rest
// are counted in a final "... and K more" problem of that kind.
const MaxProblemExamples = 20

// Kinds of structural problems, for counting.
const (
	kindHeader   = "footer and header"
	kindMeta     = "metadata area"
	kindBlock    = "BAT entry"
	kindOverlap  = "overlapping blocks"
	kindLocators = "parent locator"
)

// structProblem is one structural problem found by scanStructure.
type structProblem struct {
	kind  string
	off   int64  // absolute offset of the field at fault
	field string // the field at fault, e.g. "BAT entry 7"
	msg   string
}

// problems collects Problems of one layer, keeping the first
// MaxProblemExamples of each kind and counting the others.
type problems struct {
	path  string
	out   []Problem
	count map[string]int
	order []string
}

func (p *problems) add(kind string, off int64, msg string) {
	if p.count == nil {
		p.count = map[string]int{}
	}
	if p.count[kind] == 0 {
		p.order = append(p.order, kind)
	}
	p.count[kind]++
	if p.count[kind] <= MaxProblemExamples {
		p.out = append(p.out, Problem{p.path, off, msg})
	}
}

func (p *problems) done() []Problem {
	for _, k := range p.order {
		if n := p.count[k]; n > MaxProblemExamples {
			p.out = append(p.out, Problem{p.path, 0, fmt.Sprintf("... and %d more %s problems", n-MaxProblemExamples, k)})
		}
	}
	return p.out
}

// Check validates the structure of the file: footer and header checksums,
// the footer copy at offset 0 equal to the footer, the metadata areas
// (header, BAT, batmap, locator data) clear of each other and inside the
// file, every allocated BAT entry inside the file and clear of the metadata
// and of every other block. What it returns is bounded whatever the image
// holds: per kind of problem, the first MaxProblemExamples, then one problem
// saying how many more there are.
func (l *Layer) Check() []Problem {
	ps := &problems{path: l.path}
	add := func(off int64, format string, args ...any) {
		ps.add(kindHeader, off, fmt.Sprintf(format, args...))
	}
	fi, err := l.f.Stat()
	if err != nil {
		add(0, "stat: %v", err)
		return ps.done()
	}
	size := fi.Size()
	// Footer at the end, and its checksum.
	end := size - footerSize
	var foot [footerSize]byte
	if l.footerSrc != FooterAtEnd {
		add(end, "no valid footer at the end of the file (opened with the %s)", l.footerSrc)
	} else if err := l.readAtFull(foot[:], end, "footer"); err != nil {
		add(end, "%v", err)
	} else if cs := checksum(foot[:], 0x40); cs != l.footer.Checksum {
		add(end+0x40, "footer checksum: stored 0x%08x, computed 0x%08x", l.footer.Checksum, cs)
	}
	if l.fixed() {
		if end != l.size && l.footerSrc == FooterAtEnd {
			add(end, "fixed disk of %d bytes, but the footer is at %d", l.size, end)
		}
		return ps.done()
	}
	var copy0 [footerSize]byte
	if err := l.readAtFull(copy0[:], 0, "footer copy"); err != nil {
		add(0, "%v", err)
	} else if !bytes.Equal(copy0[:], l.footerRaw[:]) {
		add(0, "the footer copy at offset 0 differs from the footer")
	}
	var hdr [headerSize]byte
	if err := l.readAtFull(hdr[:], l.hdrOff, "dynamic header"); err != nil {
		add(l.hdrOff, "%v", err)
	} else if cs := checksum(hdr[:], 0x24); cs != l.hdr.Checksum {
		add(l.hdrOff+0x24, "dynamic header checksum: stored 0x%08x, computed 0x%08x", l.hdr.Checksum, cs)
	}
	l.scanStructure(func(p structProblem) bool {
		ps.add(p.kind, p.off, p.field+": "+p.msg)
		return true
	})
	return ps.done()
}

// checkWritable refuses to write into a layer whose structure is damaged:
// a new block or BAT entry could land on data or metadata another entry
// claims. It costs one pass over the BAT.
func (l *Layer) checkWritable() error {
	var first *structProblem
	l.scanStructure(func(p structProblem) bool {
		first = &p
		return false
	})
	if first == nil {
		return nil
	}
	return formatErr(l.path, first.off, first.field, ErrCorrupt,
		"%s; the image is damaged and is not opened for writing: run `vhd check`, or open it read-only (--ro) to read what is intact", first.msg)
}

// metaArea is a metadata area for the overlap checks: what it holds, and the
// header field that places it.
type metaArea struct {
	start, end int64
	what       string
	field      string
	fieldOff   int64
}

// scanStructure reports the structural problems of a dynamic or
// differencing layer to yield until it returns false: metadata areas that overlap each other or lie outside
// the file, and BAT entries whose block lies past the data area, overlaps
// metadata, or overlaps another block. Its memory is bounded by the BAT:
// one 8-byte key per allocated entry.
func (l *Layer) scanStructure(yield func(structProblem) bool) {
	if l.fixed() {
		return
	}
	to := int64(l.hdr.TableOffset)
	areas := []metaArea{
		{0, footerSize, "footer copy", "footer copy", 0},
		{l.hdrOff, l.hdrOff + headerSize, "dynamic header", "footer DataOffset", l.footerOff + 0x10},
		{to, to + int64(l.hdr.MaxTableEntries)*4, "BAT", "dynamic header TableOffset", l.hdrOff + 0x10},
	}
	if l.batmapOff != 0 {
		areas = append(areas, metaArea{l.batmapOff, l.batmapOff + l.batmapSize, "batmap", "batmap header", l.batmapHdrOff})
	}
	for i := range l.hdr.Locators {
		loc := &l.hdr.Locators[i]
		if !loc.used() || loc.DataLength == 0 {
			continue
		}
		fieldOff := l.hdrOff + locatorsOff + int64(i)*locatorSize
		field := fmt.Sprintf("parent locator %d (%s) DataOffset", i, fourCC(loc.Code))
		start, n := int64(loc.DataOffset), int64(loc.DataLength)
		if loc.DataOffset > uint64(l.fileSize) || start+n > l.fileSize {
			if !yield(structProblem{kindLocators, fieldOff + 0x10, field,
				fmt.Sprintf("data at 0x%x+%d lies outside the file (%d bytes)", loc.DataOffset, n, l.fileSize)}) {
				return
			}
			continue
		}
		areas = append(areas, metaArea{start, start + n, "parent locator " + fourCC(loc.Code) + " data", field, fieldOff + 0x10})
	}
	for i, b := range areas {
		for _, a := range areas[:i] {
			if b.start < a.end && b.end > a.start {
				if !yield(structProblem{kindMeta, b.fieldOff, b.field,
					fmt.Sprintf("the %s at 0x%x-0x%x overlaps the %s at 0x%x-0x%x", b.what, b.start, b.end, a.what, a.start, a.end)}) {
					return
				}
			}
		}
	}

	// Blocks: each against the data area and the metadata, then against
	// each other, sorted by position. A key is entry<<32 | block number
	// (both fit 32 bits: MaxTableEntries bounds the block count).
	n := 0
	for blk := range l.nblocks {
		if l.entry(blk) != unallocated {
			n++
		}
	}
	keys := make([]uint64, 0, n)
	sorted := true
	for blk := range l.nblocks {
		e := l.entry(blk)
		if e == unallocated {
			continue
		}
		if _, err := l.blockOffset(blk, e); err != nil {
			p := structProblem{kindBlock, to + 4*blk, fmt.Sprintf("BAT entry %d", blk), err.Error()}
			var fe *FormatError
			if errors.As(err, &fe) {
				p.msg = fe.Detail
			}
			if !yield(p) {
				return
			}
			continue
		}
		k := uint64(e)<<32 | uint64(blk)
		sorted = sorted && (len(keys) == 0 || keys[len(keys)-1] < k)
		keys = append(keys, k)
	}
	if !sorted { // blocks written in order are often stored in order
		slices.Sort(keys)
	}
	var prevEnd, prevStart, prevBlk int64 = -1, 0, 0
	for _, k := range keys {
		start, blk := int64(k>>32)*SectorSize, int64(k&0xFFFFFFFF)
		end := start + l.bitmapSize + l.sectorsIn(blk)*SectorSize
		if start < prevEnd {
			msg := fmt.Sprintf("block %d at 0x%x-0x%x overlaps block %d at 0x%x-0x%x", blk, start, end, prevBlk, prevStart, prevEnd)
			if start == prevStart {
				msg = fmt.Sprintf("block %d at 0x%x is also block %d (two BAT entries name the same block)", blk, start, prevBlk)
			}
			if !yield(structProblem{kindOverlap, to + 4*blk, fmt.Sprintf("BAT entry %d", blk), msg}) {
				return
			}
		}
		if end > prevEnd {
			prevEnd, prevStart, prevBlk = end, start, blk
		}
	}
}
