package vhdx

import (
	"fmt"
	"sort"

	"github.com/vhdmount/vhdmount/format/layer"
)

// maxLogGrowth bounds how far a log replayed into the file may extend it
// past its size (policy: a writer logs a few blocks between flushes, each at
// most 256 MiB).
const maxLogGrowth = 16 << 30

// replayIntoFile writes the pending log, replayed in memory at open, into
// the file as [MS-VHDX] 2.3.3 requires before a file is written: every
// zero descriptor's range, then every data sector (the in-memory replay
// already dropped data sectors a later zero descriptor covers), then the
// file extended to the head entry's LastFileOffset, then fsync. It does not
// touch the log or the headers: a crash part way leaves the log pending, and
// the next open replays it again (replay is idempotent).
func (l *Layer) replayIntoFile() error {
	rs := l.logReplayed
	h := l.headers[l.cur]
	p := l.path
	logStart, logEnd := int64(h.LogOffset), int64(h.LogOffset)+int64(h.LogLength)
	// A descriptor that would write the header section or the log itself
	// would destroy what a second replay needs: refuse.
	bad := func(s, e int64) bool { return s < headerAreaEnd || (s < logEnd && logStart < e) }
	for _, z := range rs.zeros {
		if bad(z.start, z.end) {
			return ferr(p, logStart, "log zero descriptor", layer.ErrUnsupported,
				"the log writes 0x%x-0x%x, over the header section or the log; not replayed into the file", z.start, z.end)
		}
	}
	offs := make([]int64, 0, len(rs.data))
	for o := range rs.data {
		if bad(o, o+logSector) {
			return ferr(p, logStart, "log data descriptor", layer.ErrUnsupported,
				"the log writes 0x%x-0x%x, over the header section or the log; not replayed into the file", o, o+logSector)
		}
		offs = append(offs, o)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("vhdx: %s: %w", p, err)
	}
	size := fi.Size()
	end := max(rs.lastFileOffset, rs.maxEnd)
	if end > size+maxLogGrowth {
		// A writer extends the file a block or a few at a time between
		// flushes; a log that asks for far more is not believed.
		return ferr(p, logStart, "log LastFileOffset", layer.ErrUnsupported,
			"the log would extend the file from %d to %d bytes, more than %d GiB: not replayed into the file (open it read-only to read it)", size, end, maxLogGrowth>>30)
	}
	if end > size {
		if err := l.f.Truncate(end); err != nil {
			return fmt.Errorf("vhdx: %s: extending the file to 0x%x for the log replay: %w", p, end, err)
		}
	}
	// Zero descriptors: past the old end the extension reads zeros already;
	// inside the file the range is punched (zeros written where the file
	// cannot be punched), so the work is bounded by the file's size.
	for _, z := range rs.zeros {
		if e := min(z.end, size); e > z.start {
			if err := l.punch(z.start, e-z.start, true, thing{"log replay (zero descriptor)", -1}); err != nil {
				return err
			}
		}
	}
	for _, o := range offs {
		if err := l.writeFile(rs.data[o], o, thing{"log replay (data sector)", -1}); err != nil {
			return err
		}
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("vhdx: %s: fsync after the log replay: %w", p, err)
	}
	return nil
}
