package vhdx

import "github.com/vhdmount/vhdmount/format/layer"

var _ layer.Extenter = (*Layer)(nil)

// Extent reports how the block at off is stored, from the BAT alone (no
// sector bitmap is read): Data for a FULLY_PRESENT or PARTIALLY_PRESENT
// block, Zero for ZERO, UNMAPPED and UNDEFINED, Parent for NOT_PRESENT (in
// a file without a parent, NOT_PRESENT reads zeros: the chain ends below
// it). It returns the length, at most n, of the run of blocks in that state.
// An entry that cannot be read or has an invalid state counts as Data, so
// the read of it reports the problem.
func (l *Layer) Extent(off, n int64) (layer.State, int64) {
	bs := l.blockSize
	first := true
	var st layer.State
	var got int64
	for got < n {
		pos := off + got
		b := pos / bs
		take := min(n-got, bs-pos%bs)
		idx := b + b/l.chunkRatio
		p, err := l.batPage(idx / batPageEntries)
		var s layer.State
		switch {
		case err != nil:
			s = layer.Data
		case p.zero.Load():
			s = layer.Parent
			x := (idx/batPageEntries + 1) * batPageEntries
			take = min(n-got, (x-x/(l.chunkRatio+1))*bs-pos)
		default:
			s = stateOf(p.e[idx%batPageEntries].Load())
		}
		if first {
			st, first = s, false
		} else if s != st {
			break
		}
		got += take
	}
	return st, got
}

func stateOf(e uint64) layer.State {
	switch e & 7 {
	case stNotPresent:
		return layer.Parent
	case stUndefined, stZero, stUnmapped:
		return layer.Zero
	}
	return layer.Data
}
