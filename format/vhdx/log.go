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

	// chains maps a valid entry's offset to where its run of consecutive
	// entries ends; preds counts the entries whose successor an entry is.
	// merged says some entry is the successor of two (only in a hostile or
	// strangely overwritten log): runs then share tails and a tail's place
	// in a run is checked by walking it.
	chains map[int64]chainPos
	preds  map[int64]int
	merged bool
	steps  int64 // entries stepped over by the search, bounded
	// lookups counts calls of entry (for tests).
	lookups int64
}

// chainPos places an entry in its run: the offset of the run's last entry
// (its head) and how many entries lie after it up to the head.
type chainPos struct{ head, dist int64 }

func newLogReader(l *Layer, buf []byte, guid GUID) *logReader {
	ll := int64(len(buf))
	return &logReader{l: l, buf: buf, guid: guid, memo: map[int64]*logEntry{}, bad: map[int64]bool{},
		limit: 4*ll + 16*miB, chains: map[int64]chainPos{}, preds: map[int64]int{}}
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
	r.lookups++
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

// next returns the entry after e in its run (the valid entry right after
// it with the next sequence number), or nil.
func (r *logReader) next(e *logEntry) (*logEntry, error) {
	n, err := r.entry((e.off + e.length) % int64(len(r.buf)))
	if err != nil || n == nil || n.seq != e.seq+1 {
		return nil, err
	}
	return n, nil
}

// chainOf places the valid entry at off in its run. Each entry is placed
// once: the search stays linear in the entries of the log.
func (r *logReader) chainOf(off int64) (chainPos, error) {
	var path []int64
	var end chainPos
	for cur := off; ; {
		if p, ok := r.chains[cur]; ok {
			end = p
			break
		}
		e := r.memo[cur]
		n, err := r.next(e)
		if err != nil {
			return chainPos{}, err
		}
		path = append(path, cur)
		if n == nil || int64(len(path)) > int64(len(r.buf))/logSector {
			r.chains[cur] = chainPos{head: cur}
			end = chainPos{head: cur}
			path = path[:len(path)-1]
			break
		}
		if r.preds[n.off]++; r.preds[n.off] > 1 {
			r.merged = true
		}
		cur = n.off
	}
	for i := len(path) - 1; i >= 0; i-- {
		end.dist++
		r.chains[path[i]] = end
	}
	return r.chains[off], nil
}

// inRun says whether the entry at tail lies in the run that starts at the
// entry at start (placed at sp).
func (r *logReader) inRun(start int64, sp chainPos, tail int64) (bool, error) {
	te, err := r.entry(tail)
	if err != nil || te == nil {
		return false, err
	}
	tp, err := r.chainOf(tail)
	if err != nil || tp.head != sp.head || tp.dist > sp.dist {
		return false, err
	}
	if !r.merged {
		return true, nil // one run leads to each head: tail is on it
	}
	e := r.memo[start]
	for k := sp.dist - tp.dist; k > 0; k-- {
		if r.steps++; r.steps > 4*int64(len(r.buf))/logSector+1<<20 {
			return false, ferr(r.l.path, int64(r.l.headers[r.l.cur].LogOffset)+start, "log entry", layer.ErrCorrupt,
				"the log holds too many entangled runs of entries to search")
		}
		if e, err = r.next(e); err != nil || e == nil {
			return false, err
		}
	}
	return e.off == tail, nil
}

// activeSequence finds the active sequence as [MS-VHDX] 2.3.3 describes:
// scanning from each candidate tail, the longest run of valid entries with
// consecutive sequence numbers whose head names a tail inside it; the one
// with the greatest head sequence number wins. It returns the entries from
// the head's tail to the head.
func (r *logReader) activeSequence() ([]*logEntry, error) {
	ll := int64(len(r.buf))
	var best *logEntry // the winning head
	cur, old := int64(0), int64(0)
	for iter := int64(0); iter <= ll/logSector+1; iter++ {
		e, err := r.entry(cur)
		if err != nil {
			return nil, err
		}
		ok := false
		var after int64
		if e != nil {
			sp, err := r.chainOf(cur)
			if err != nil {
				return nil, err
			}
			h := r.memo[sp.head]
			after = (h.off + h.length) % ll
			if ok, err = r.inRun(cur, sp, h.tail); err != nil {
				return nil, err
			}
			if ok && (best == nil || h.seq > best.seq) {
				best = h
			}
		}
		if ok {
			cur = after
		} else {
			cur = (cur + logSector) % ll
		}
		if iter > 0 && cur <= old {
			break
		}
		old = cur
	}
	if best == nil {
		return nil, nil
	}
	var seq []*logEntry
	for e := r.memo[best.tail]; ; {
		seq = append(seq, e)
		if e == best || int64(len(seq)) > ll/logSector {
			break
		}
		var err error
		if e, err = r.next(e); err != nil || e == nil {
			return nil, fmt.Errorf("vhdx: %s: BUG: the log's active sequence lost its way", r.l.path)
		}
	}
	return seq, nil
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
	r := newLogReader(l, buf, h.LogGUID)
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
