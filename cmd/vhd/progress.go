package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// progress draws a one-line progress bar on a terminal; on anything else it
// stays silent.
type progress struct {
	w     io.Writer
	total int64
	done  atomic.Int64
	start time.Time
	stop  chan struct{}
	ended chan struct{}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newProgress starts a progress bar for total bytes on w, or returns nil
// (which is safe to use) when w is not a terminal.
func newProgress(w io.Writer, total int64) *progress {
	if !isTerminal(w) || total <= 0 {
		return nil
	}
	p := &progress{w: w, total: total, start: time.Now(), stop: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(p.ended)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw()
				fmt.Fprintln(p.w)
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

func (p *progress) add(n int64) {
	if p != nil {
		p.done.Add(n)
	}
}

func (p *progress) draw() {
	done := p.done.Load()
	frac := float64(done) / float64(p.total)
	const width = 30
	bar := make([]byte, width)
	for i := range bar {
		if float64(i) < frac*width {
			bar[i] = '#'
		} else {
			bar[i] = '.'
		}
	}
	rate := float64(done) / max(time.Since(p.start).Seconds(), 0.001)
	fmt.Fprintf(p.w, "\r[%s] %3.0f%% %s of %s, %s/s   ", bar, frac*100, humanSize(done), humanSize(p.total), humanSize(int64(rate)))
}

func (p *progress) finish() {
	if p != nil {
		close(p.stop)
		<-p.ended
	}
}
