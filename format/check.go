package format

import (
	"bytes"
	"fmt"
	"github.com/vhdmount/vhdmount/format/vhdx"
	"sort"
	"strings"
)

// Problem is one structural problem found by Check.
type Problem struct {
	Path string `json:"path"`
	Off  int64  `json:"offset"`
	Msg  string `json:"problem"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: at 0x%x: %s", p.Path, p.Off, p.Msg) }

// Check validates the structure of every image of the chain: footer and
// header checksums, the footer copy at offset 0 equal to the footer, every
// allocated BAT entry inside the file and clear of the metadata, of the
// locators and of every other block, locator data inside the file. The chain
// was already checked for parent unique ids and cycles by Open. Open the disk
// with IgnoreChecksums to have bad checksums reported here rather than
// refused by Open.
func (d *Disk) Check() []Problem {
	var out []Problem
	for _, l := range d.layers {
		switch vl := l.(type) {
		case *layer:
			out = append(out, vl.check()...)
		case *vhdx.Layer:
			for _, p := range vl.Check() {
				out = append(out, Problem{p.Path, p.Off, p.Msg})
			}
		}
	}
	return out
}

func (l *layer) check() []Problem {
	var out []Problem
	add := func(off int64, format string, args ...any) {
		out = append(out, Problem{l.path, off, fmt.Sprintf(format, args...)})
	}
	fi, err := l.f.Stat()
	if err != nil {
		add(0, "stat: %v", err)
		return out
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
		return out
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
	for i := range l.hdr.Locators {
		loc := &l.hdr.Locators[i]
		if loc.used() && loc.DataLength > 0 && (loc.DataOffset > uint64(size) || int64(loc.DataOffset)+int64(loc.DataLength) > size) {
			add(l.hdrOff+locatorsOff+int64(i)*locatorSize, "parent locator %s data at 0x%x+%d lies outside the file", fourCC(loc.Code), loc.DataOffset, loc.DataLength)
		}
	}
	type span struct{ start, end, blk int64 }
	var spans []span
	for blk := range l.nblocks {
		e := l.entry(blk)
		if e == unallocated {
			continue
		}
		start, err := l.blockOffset(blk, e)
		if err != nil {
			add(int64(l.hdr.TableOffset)+4*blk, "%s", strings.TrimPrefix(err.Error(), "vhd: "))
			continue
		}
		spans = append(spans, span{start, start + l.bitmapSize + l.sectorsIn(blk)*SectorSize, blk})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if a, b := spans[i-1], spans[i]; b.start < a.end {
			add(int64(l.hdr.TableOffset)+4*b.blk, "block %d at 0x%x overlaps block %d at 0x%x-0x%x", b.blk, b.start, a.blk, a.start, a.end)
		}
	}
	return out
}
