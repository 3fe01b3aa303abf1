package vhdx

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/vhdmount/vhdmount/format/layer"
)

// The BAT is read in pages on demand and kept in a bounded cache, so that
// opening a huge empty disk reads none of it (64 TiB at 1 MiB blocks has a
// 512 MiB BAT).
const (
	batPageEntries = 8192 // 64 KiB
	maxBATPages    = 256  // 16 MiB of cached BAT
	maxBitmapBytes = 16 * miB
)

// batEntry returns BAT entry i, which the caller keeps below l.batEntries.
func (l *Layer) batEntry(i int64) (uint64, error) {
	p, err := l.batPage(i / batPageEntries)
	if err != nil {
		return 0, err
	}
	return p.e[i%batPageEntries].Load(), nil
}

// batPg is a page of the BAT. Its entries are atomic so that a writer can
// update a cached page while readers map through it.
type batPg struct {
	e    []atomic.Uint64
	zero atomic.Bool // every entry is 0 (NOT_PRESENT)
}

// batPage returns page pg of the BAT (entries pg*batPageEntries on), cached.
//
// A page read from the file is cached only if no writer changed a cached
// structure while it was read (cacheGen), so a page read before a
// concurrent BAT update never replaces the updated one.
func (l *Layer) batPage(pg int64) (*batPg, error) {
	l.cacheMu.Lock()
	p := l.batPages[pg]
	gen := l.cacheGen
	l.cacheMu.Unlock()
	if p == nil {
		n := min(int64(batPageEntries), l.bat.Length/8-pg*batPageEntries)
		raw := make([]byte, n*8)
		if err := l.readAt(raw, l.bat.Off+pg*batPageEntries*8, "BAT"); err != nil {
			return nil, err
		}
		p = &batPg{e: make([]atomic.Uint64, n)}
		zero := true
		for k := range p.e {
			v := binary.LittleEndian.Uint64(raw[8*k:])
			p.e[k].Store(v)
			zero = zero && v == 0
		}
		p.zero.Store(zero)
		l.cacheMu.Lock()
		if q := l.batPages[pg]; q != nil {
			p = q
		} else if gen == l.cacheGen {
			if len(l.batPages) >= maxBATPages {
				for k := range l.batPages {
					delete(l.batPages, k)
					break
				}
			}
			l.batPages[pg] = p
		}
		l.cacheMu.Unlock()
	}
	return p, nil
}

func (l *Layer) batField(idx int64) string {
	return fmt.Sprintf("BAT entry %d", idx)
}

// blockFileOff validates the file offset of BAT entry e (index idx) for a
// payload block (need bytes used) or a sector bitmap block.
func (l *Layer) blockFileOff(idx int64, e uint64, need int64, what thing) (int64, error) {
	mb := e >> 20
	if mb == 0 || mb > maxFileOffset>>20 {
		return 0, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt, "%s at file offset 0x%x MiB", what, mb)
	}
	fo := int64(mb) << 20
	if eff := l.effSize.Load(); fo+need > eff {
		return 0, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt,
			"%s at 0x%x-0x%x lies past the end of the file (%d bytes)", what, fo, fo+need, eff)
	}
	for _, a := range l.metaAreas {
		if fo < a.end && a.start < fo+need {
			return 0, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt,
				"%s at 0x%x-0x%x overlaps the %s at 0x%x-0x%x", what, fo, fo+need, a.what, a.start, a.end)
		}
	}
	return fo, nil
}

// blockBitmap returns the sector bitmap bits of payload block b (one bit per
// logical sector, least significant bit first), cached.
func (l *Layer) blockBitmap(b int64) ([]byte, error) {
	l.cacheMu.Lock()
	bm := l.bitmaps[b]
	gen := l.cacheGen
	l.cacheMu.Unlock()
	if bm != nil {
		return bm, nil
	}
	c := b / l.chunkRatio
	idx := c*(l.chunkRatio+1) + l.chunkRatio
	e, err := l.batEntry(idx)
	if err != nil {
		return nil, err
	}
	if e&7 != stFullyPresent {
		return nil, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt,
			"block %d is PARTIALLY_PRESENT but the sector bitmap of chunk %d is in state %d, not PRESENT", b, c, e&7)
	}
	fo, err := l.blockFileOff(idx, e, miB, thing{"sector bitmap block of chunk", c})
	if err != nil {
		return nil, err
	}
	n := l.spb / 8
	bm = make([]byte, n)
	if err := l.readAt(bm, fo+(b%l.chunkRatio)*n, "sector bitmap"); err != nil {
		return nil, err
	}
	l.cacheMu.Lock()
	if q := l.bitmaps[b]; q != nil {
		bm = q
	} else if gen == l.cacheGen {
		l.cacheBitmap(b, bm)
	}
	l.cacheMu.Unlock()
	return bm, nil
}

// cacheBitmap stores bm as block b's bitmap, evicting others to stay within
// maxBitmapBytes. The caller holds cacheMu.
func (l *Layer) cacheBitmap(b int64, bm []byte) {
	n := int64(len(bm))
	if int64(len(l.bitmaps)+1)*n > maxBitmapBytes {
		for k := range l.bitmaps {
			delete(l.bitmaps, k)
			if int64(len(l.bitmaps)+1)*n <= maxBitmapBytes {
				break
			}
		}
	}
	l.bitmaps[b] = bm
}

func addRun(runs []layer.Run, r layer.Run) []layer.Run {
	if n := len(runs); n > 0 {
		p := &runs[n-1]
		if p.State == r.State && (r.State != layer.Data || p.FileOff+p.Len == r.FileOff) {
			p.Len += r.Len
			return runs
		}
	}
	return append(runs, r)
}

// Map appends the runs covering [off, off+n) of the virtual disk: FULLY_PRESENT
// blocks are Data; PARTIALLY_PRESENT blocks Data or Parent per sector; NOT_PRESENT
// Parent (zeros at the bottom of a chain); ZERO, UNDEFINED and UNMAPPED Zero.
func (l *Layer) Map(runs []layer.Run, off, n int64) ([]layer.Run, error) {
	if off < 0 || n < 0 || off > l.size || n > l.size-off {
		return runs, fmt.Errorf("vhdx: %s: range %d+%d outside the %d-byte disk", l.path, off, n, l.size)
	}
	bs := l.blockSize
	var page *batPg
	pg := int64(-1)
	for n > 0 {
		b := off / bs
		in := off - b*bs
		take := min(n, bs-in)
		idx := b + b/l.chunkRatio
		if idx/batPageEntries != pg {
			p, err := l.batPage(idx / batPageEntries)
			if err != nil {
				return runs, err
			}
			page, pg = p, idx/batPageEntries
		}
		if page.zero.Load() {
			// Every block up to the end of the page is NOT_PRESENT.
			x := (pg + 1) * batPageEntries
			end := (x - x/(l.chunkRatio+1)) * bs
			take = min(n, end-off)
			runs = addRun(runs, layer.Run{Len: take, State: layer.Parent})
			off += take
			n -= take
			continue
		}
		e := page.e[idx%batPageEntries].Load()
		switch e & 7 {
		case stNotPresent:
			runs = addRun(runs, layer.Run{Len: take, State: layer.Parent})
		case stUndefined, stZero, stUnmapped:
			runs = addRun(runs, layer.Run{Len: take, State: layer.Zero})
		case stFullyPresent, stPartiallyPresent:
			need := min(bs, l.size-b*bs)
			fo, err := l.blockFileOff(idx, e, need, thing{"payload block", b})
			if err != nil {
				return runs, err
			}
			if e&7 == stFullyPresent {
				runs = addRun(runs, layer.Run{Len: take, State: layer.Data, FileOff: fo + in})
				break
			}
			if !l.hasParent {
				return runs, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt,
					"payload block %d is PARTIALLY_PRESENT in a file without a parent", b)
			}
			bm, err := l.blockBitmap(b)
			if err != nil {
				return runs, err
			}
			runs = l.mapPartial(runs, bm, fo, in, in+take)
		default:
			return runs, ferr(l.path, l.bat.Off+8*idx, l.batField(idx), layer.ErrCorrupt,
				"payload block %d has the invalid state %d", b, e&7)
		}
		off += take
		n -= take
	}
	return runs, nil
}

// mapPartial maps bytes [from, to) of a PARTIALLY_PRESENT block stored at fo.
func (l *Layer) mapPartial(runs []layer.Run, bm []byte, fo, from, to int64) []layer.Run {
	ss := int64(l.lss)
	bit := func(s int64) bool { return bm[s>>3]&(1<<(s&7)) != 0 }
	for pos := from; pos < to; {
		s := pos / ss
		v := bit(s)
		e := s + 1
		for e*ss < to {
			if e&7 == 0 && (e+8)*ss <= to {
				if c := bm[e>>3]; (v && c == 0xFF) || (!v && c == 0) {
					e += 8
					continue
				}
			}
			if bit(e) != v {
				break
			}
			e++
		}
		end := min(e*ss, to)
		if v {
			runs = addRun(runs, layer.Run{Len: end - pos, State: layer.Data, FileOff: fo + pos})
		} else {
			runs = addRun(runs, layer.Run{Len: end - pos, State: layer.Parent})
		}
		pos = end
	}
	return runs
}

// ReadData fills p from the file at off (inside a Data run), as the file
// reads after the in-memory log replay.
func (l *Layer) ReadData(p []byte, off int64) error {
	return l.readAt(p, off, "payload data")
}
