package format

import (
	"sync"

	lay "github.com/vhdmount/vhdmount/format/layer"
)

// A sequential reader of a disk (a FUSE mount reading ahead, a copy) reads
// the image files in the pieces the chain maps it to: a cold chain's layers
// are read a few hundred KiB at a time, one file after the other, and the
// host's readahead of each file only starts once a read of it arrives. So
// once a stream of large reads has run for raConfirm bytes, Disk asks the
// kernel to start reading the files ahead of it (POSIX_FADV_WILLNEED over
// the file ranges the next bytes of the disk map to), up to raWindow ahead
// of the stream, in the background. Small reads (random 4 KiB) never start
// a stream, and a read that jumps starts a new one, so random access reads
// nothing it did not ask for.
const (
	raMin     = 128 << 10 // reads smaller than this are not part of a stream
	raSlack   = 8 << 20   // a read starting this close to the stream's end continues it (FUSE sends several requests at once, not always in order)
	raConfirm = 2 << 20   // bytes a stream reads before the files are read ahead of it
	raWindow  = 32 << 20  // how far ahead of the stream the files are read
	raChunk   = 4 << 20   // the stretch of the disk mapped at a time
)

// readahead is the state of one sequential stream of reads.
type readahead struct {
	mu    sync.Mutex
	start int64 // where the stream began
	end   int64 // the furthest end of its reads
	ahead int64 // the disk is advised up to here
	busy  bool  // a goroutine is advising
	wg    sync.WaitGroup
}

// adviseFile is willNeed; tests replace it to see the advice.
var adviseFile = willNeed

// note records a read of n bytes at off and, when it continues a stream far
// enough, starts advising the files ahead of it.
func (r *readahead) note(d *Disk, off, n int64) {
	if n < raMin || !canAdvise {
		return
	}
	end := off + n
	r.mu.Lock()
	if off < r.start || off > r.end+raSlack { // a new stream
		r.start, r.end, r.ahead = off, end, end
		r.mu.Unlock()
		return
	}
	r.end = max(r.end, end)
	run := r.end - r.start
	window := min(raWindow, 2*run)
	if r.busy || run < raConfirm || r.ahead >= d.size || r.ahead-r.end >= window/2 {
		r.mu.Unlock()
		return
	}
	from := max(r.ahead, r.end)
	to := min(r.end+window, d.size)
	r.ahead, r.busy = to, true
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		d.advise(from, to)
		r.mu.Lock()
		r.busy = false
		r.mu.Unlock()
	}()
}

// advise asks the kernel to read the file ranges that the disk's bytes
// [from, to) map to, merging runs that follow each other in one file.
func (d *Disk) advise(from, to int64) {
	li, start, end := -1, int64(0), int64(0)
	flush := func() {
		if li >= 0 && end > start {
			adviseFile(d.files[li], start, end-start) //nolint:errcheck // advice only
		}
	}
	for off := from; off < to; off += raChunk {
		err := d.walk(0, off, min(raChunk, to-off), func(i int, run lay.Run, _ int64) {
			if i < 0 {
				return
			}
			if i == li && run.FileOff == end {
				end += run.Len
				return
			}
			flush()
			li, start, end = i, run.FileOff, run.FileOff+run.Len
		})
		if err != nil {
			return // the read that meets the error reports it
		}
	}
	flush()
}
