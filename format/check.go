package format

import (
	"fmt"

	"github.com/vhdmount/vhdmount/format/vhd"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// Problem is one structural problem found by Check.
type Problem struct {
	Path string `json:"path"`
	Off  int64  `json:"offset"`
	Msg  string `json:"problem"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: at 0x%x: %s", p.Path, p.Off, p.Msg) }

// MaxProblemExamples is how many problems of one kind Check lists per image;
// the rest are counted in a final "... and K more" problem of that kind.
const MaxProblemExamples = vhd.MaxProblemExamples

// Check validates the structure of every image of the chain: footer and
// header checksums, the footer copy at offset 0 equal to the footer, the
// metadata areas (header, BAT, batmap, locator data) clear of each other and
// inside the file, every allocated BAT entry inside the file and clear of the
// metadata and of every other block. The chain was already checked for
// parent unique ids and cycles by Open. Open the disk with IgnoreChecksums to
// have bad checksums reported here rather than refused by Open.
//
// What Check returns is bounded whatever the image holds: per image and kind
// of problem, the first MaxProblemExamples, then one problem saying how many
// more there are.
func (d *Disk) Check() []Problem {
	var out []Problem
	for _, l := range d.layers {
		switch vl := l.(type) {
		case *vhd.Layer:
			for _, p := range vl.Check() {
				out = append(out, Problem{p.Path, p.Off, p.Msg})
			}
		case *vhdx.Layer:
			for _, p := range vl.Check() {
				out = append(out, Problem{p.Path, p.Off, p.Msg})
			}
		}
	}
	return out
}
