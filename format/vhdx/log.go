package vhdx

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"

	"github.com/vhdmount/vhdmount/format/layer"
)

const (
	logSector       = 4 * kiB
	logEntryHdrSize = 64
	logDescSize     = 32
	maxLogDescs     = 1 << 20 // descriptors replayed in all; more is refused
)

// replayState is the result of replaying the active log sequence in memory:
// what the file reads as afterwards. Sectors in data were written by data
// descriptors after any zero descriptor that covers them; zeros is sorted
// and disjoint.
type replayState struct {
	entries        int
	firstSeq       uint64
	lastSeq        uint64
	tail, head     int64 // log offsets of the first and last entry replayed
	flushedFileOff int64
	lastFileOffset int64
	descriptors    int
	data           map[int64][]byte // 4 KiB sector at a file offset
	zeros          []span
	minOff, maxEnd int64 // bounds of everything the log writes
}

type span struct{ start, end int64 }

// apply lays what the log wrote over b, read from the file at off.
func (r *replayState) apply(b []byte, off int64) {
	end := off + int64(len(b))
	if end <= r.minOff || off >= r.maxEnd {
		return
	}
	// Zero spans first: the data sectors left are newer than any of them.
	i := sort.Search(len(r.zeros), func(i int) bool { return r.zeros[i].end > off })
	for ; i < len(r.zeros) && r.zeros[i].start < end; i++ {
		s, e := max(r.zeros[i].start, off), min(r.zeros[i].end, end)
		clear(b[s-off : e-off])
	}
	if len(r.data) == 0 {
		return
	}
	for s := off &^ (logSector - 1); s < end; s += logSector {
		d, ok := r.data[s]
		if !ok {
			continue
		}
		lo, hi := max(s, off), min(s+logSector, end)
		copy(b[lo-off:hi-off], d[lo-s:hi-s])
	}
}

type logDesc struct {
	zero    bool
	fileOff int64
	length  int64 // zero descriptors
	leading uint64
	trail   uint32
	dataAt  int64 // log offset of the data sector (data descriptors)
}

type logEntry struct {
	off, length int64
	tail        int64
	seq         uint64
	flushed     int64
	last        int64
	descs       []logDesc
}

// logReader finds and validates entries in a log held in memory.
type logReader struct {
	l     *Layer
	buf   []byte // the whole log
	guid  GUID
	memo  map[int64]*logEntry
	bad   map[int64]bool
	work  int64 // bytes checksummed so far
	limit int64
}

// at returns bytes [off, off+n) of the circular log.
func (r *logReader) at(off, n int64) []byte {
	ll := int64(len(r.buf))
	off %= ll
	if off+n <= ll {
		return r.buf[off : off+n]
	}
	out := make([]byte, 0, n)
	out = append(out, r.buf[off:]...)
	return append(out, r.buf[:n-(ll-off)]...)
}

// entry returns the valid entry at log offset off, or nil.
func (r *logReader) entry(off int64) (*logEntry, error) {
	if e, ok := r.memo[off]; ok {
		return e, nil
	}
	if r.bad[off] {
		return nil, nil
	}
	e, err := r.parse(off)
	if err != nil {
		return nil, err
	}
	if e == nil {
		r.bad[off] = true
	} else {
		r.memo[off] = e
	}
	return e, nil
}

func (r *logReader) parse(off int64) (*logEntry, error) {
	ll := int64(len(r.buf))
	h := r.at(off, logSector)
	if string(h[:4]) != "loge" {
		return nil, nil
	}
	el := int64(binary.LittleEndian.Uint32(h[8:]))
	tail := int64(binary.LittleEndian.Uint32(h[12:]))
	seq := binary.LittleEndian.Uint64(h[16:])
	dc := int64(binary.LittleEndian.Uint32(h[24:]))
	var g GUID
	copy(g[:], h[32:])
	flushed := binary.LittleEndian.Uint64(h[48:])
	last := binary.LittleEndian.Uint64(h[56:])
	if el == 0 || el%logSector != 0 || el > ll || tail%logSector != 0 || tail >= ll || g != r.guid ||
		flushed > maxFileOffset || last > maxFileOffset || logEntryHdrSize+logDescSize*dc > el {
		return nil, nil
	}
	r.work += el
	if r.work > r.limit {
		return nil, ferr(r.l.path, int64(r.l.headers[r.l.cur].LogOffset)+off, "log entry", layer.ErrCorrupt,
			"the log holds too many overlapping entries to search (checksummed %d bytes of a %d-byte log)", r.work, ll)
	}
	ent := r.at(off, el)
	c := crc32.Update(0, crcTable, ent[:4])
	c = crc32.Update(c, crcTable, []byte{0, 0, 0, 0})
	c = crc32.Update(c, crcTable, ent[8:])
	if c != binary.LittleEndian.Uint32(ent[4:]) {
		return nil, nil
	}
	nsecDesc := (logEntryHdrSize + logDescSize*dc + logSector - 1) / logSector
	e := &logEntry{off: off, length: el, tail: tail, seq: seq, flushed: int64(flushed), last: int64(last)}
	ndata := int64(0)
	for i := int64(0); i < dc; i++ {
		d := ent[logEntryHdrSize+logDescSize*i:]
		if binary.LittleEndian.Uint64(d[24:]) != seq {
			return nil, nil
		}
		fo := binary.LittleEndian.Uint64(d[16:])
		if fo%logSector != 0 || fo > maxFileOffset {
			return nil, nil
		}
		switch string(d[:4]) {
		case "zero":
			zl := binary.LittleEndian.Uint64(d[8:])
			if zl%logSector != 0 || zl > maxFileOffset {
				return nil, nil
			}
			e.descs = append(e.descs, logDesc{zero: true, fileOff: int64(fo), length: int64(zl)})
		case "desc":
			at := (nsecDesc + ndata) * logSector
			if at+logSector > el {
				return nil, nil
			}
			s := ent[at : at+logSector]
			if string(s[:4]) != "data" || uint64(binary.LittleEndian.Uint32(s[4:]))<<32|uint64(binary.LittleEndian.Uint32(s[4092:])) != seq {
				return nil, nil
			}
			e.descs = append(e.descs, logDesc{fileOff: int64(fo), leading: binary.LittleEndian.Uint64(d[8:]),
				trail: binary.LittleEndian.Uint32(d[4:]), dataAt: (off + at) % ll})
			ndata++
		default:
			return nil, nil
		}
	}
	return e, nil
}

// activeSequence finds the active sequence as [MS-VHDX] 2.3.3 describes:
// scanning from each candidate tail, the longest run of valid entries with
// consecutive sequence numbers whose head names a tail inside it; the one
// with the greatest head sequence number wins. It returns the entries from
// the head's tail to the head.
func (r *logReader) activeSequence() ([]*logEntry, error) {
	ll := int64(len(r.buf))
	var best []*logEntry
	cur, old := int64(0), int64(0)
	for iter := int64(0); iter <= ll/logSector+1; iter++ {
		var seq []*logEntry
		head := cur
		for int64(len(seq)) <= ll/logSector {
			e, err := r.entry(head)
			if err != nil {
				return nil, err
			}
			if e == nil || (len(seq) > 0 && e.seq != seq[len(seq)-1].seq+1) {
				break
			}
			seq = append(seq, e)
			head = (head + e.length) % ll
		}
		ok := false
		if len(seq) > 0 {
			h := seq[len(seq)-1]
			for i, e := range seq {
				if e.off == h.tail {
					ok = true
					if best == nil || h.seq > best[len(best)-1].seq {
						best = seq[i:]
					}
					break
				}
			}
		}
		if ok {
			cur = head
		} else {
			cur = (cur + logSector) % ll
		}
		if iter > 0 && cur <= old {
			break
		}
		old = cur
	}
	return best, nil
}

// replayLog finds the active log sequence and replays it in memory.
func (l *Layer) replayLog() (*replayState, error) {
	h := l.headers[l.cur]
	p := l.path
	lo, ll := int64(h.LogOffset), int64(h.LogLength)
	hf := fmt.Sprintf("header %d ", l.cur+1)
	if ll > maxLogLength {
		return nil, ferr(p, h.Off+68, hf+"LogLength", layer.ErrUnsupported, "a pending log of %d bytes; at most %d are replayed", ll, maxLogLength)
	}
	if lo+ll > l.fileSize {
		return nil, ferr(p, h.Off+72, hf+"LogOffset", layer.ErrCorrupt, "log 0x%x+0x%x lies past the end of the file (%d bytes)", lo, ll, l.fileSize)
	}
	buf := make([]byte, ll)
	if err := l.readRaw(buf, lo, "log"); err != nil {
		return nil, err
	}
	r := &logReader{l: l, buf: buf, guid: h.LogGUID, memo: map[int64]*logEntry{}, bad: map[int64]bool{}, limit: 4*ll + 16*miB}
	seq, err := r.activeSequence()
	if err != nil {
		return nil, err
	}
	if len(seq) == 0 {
		return nil, ferr(p, lo, "log", layer.ErrCorrupt, "the header names log %s but the log holds no valid sequence of entries for it", h.LogGUID)
	}
	headE := seq[len(seq)-1]
	if headE.flushed > l.fileSize {
		return nil, ferr(p, lo+headE.off+48, "log entry FlushedFileOffset", layer.ErrCorrupt,
			"the file (%d bytes) is shorter than the log's flushed file offset %d: truncated", l.fileSize, headE.flushed)
	}
	rs := &replayState{entries: len(seq), firstSeq: seq[0].seq, lastSeq: headE.seq, tail: seq[0].off, head: headE.off,
		flushedFileOff: headE.flushed, lastFileOffset: headE.last, data: map[int64][]byte{}, minOff: 1 << 62}
	var zeros []span
	work := 0
	for _, e := range seq {
		for _, d := range e.descs {
			rs.descriptors++
			if rs.descriptors > maxLogDescs {
				return nil, ferr(p, lo+e.off, "log entry DescriptorCount", layer.ErrUnsupported, "more than %d descriptors to replay", maxLogDescs)
			}
			if d.zero {
				if d.length == 0 {
					continue
				}
				s := span{d.fileOff, d.fileOff + d.length}
				// Earlier data sectors under the span are gone.
				if n := d.length / logSector; n < int64(len(rs.data)) {
					for o := s.start; o < s.end; o += logSector {
						delete(rs.data, o)
					}
					work += int(n)
				} else {
					for o := range rs.data {
						if o >= s.start && o < s.end {
							delete(rs.data, o)
						}
					}
					work += len(rs.data)
				}
				zeros = append(zeros, s)
				rs.minOff, rs.maxEnd = min(rs.minOff, s.start), max(rs.maxEnd, s.end)
			} else {
				sec := make([]byte, logSector)
				copy(sec, r.at(d.dataAt, logSector))
				binary.LittleEndian.PutUint64(sec, d.leading)
				binary.LittleEndian.PutUint32(sec[logSector-4:], d.trail)
				rs.data[d.fileOff] = sec
				rs.minOff, rs.maxEnd = min(rs.minOff, d.fileOff), max(rs.maxEnd, d.fileOff+logSector)
			}
			if work > 1<<26 {
				return nil, ferr(p, lo+e.off, "log", layer.ErrUnsupported, "too many overlapping zero descriptors to replay")
			}
		}
	}
	sort.Slice(zeros, func(i, j int) bool { return zeros[i].start < zeros[j].start })
	for _, z := range zeros {
		if n := len(rs.zeros); n > 0 && z.start <= rs.zeros[n-1].end {
			rs.zeros[n-1].end = max(rs.zeros[n-1].end, z.end)
			continue
		}
		rs.zeros = append(rs.zeros, z)
	}
	return rs, nil
}
