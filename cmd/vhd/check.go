package main

import (
	"fmt"
	"io"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	image, asJSON, parent, ok := imageCommand("check", args, stderr)
	if !ok {
		return exitUsage
	}
	// Checksums are reported as problems, not refused, so open ignoring them.
	d, err := format.Open(image, &format.Options{ReadOnly: true, IgnoreChecksums: true, Parent: parent})
	if err != nil {
		fmt.Fprintf(stderr, "vhd: cannot check: %v\n", trimPrefix(err))
		return exitCantRead
	}
	defer d.Close()
	probs := d.Check()
	if asJSON {
		out := struct {
			Image    string           `json:"image"`
			Layers   int              `json:"layers"`
			Clean    bool             `json:"clean"`
			Problems []format.Problem `json:"problems"`
		}{image, d.Depth() + 1, len(probs) == 0, probs}
		if out.Problems == nil {
			out.Problems = []format.Problem{}
		}
		writeJSON(stdout, out)
	} else {
		for _, p := range probs {
			fmt.Fprintln(stdout, p)
		}
		if len(probs) == 0 {
			fmt.Fprintf(stdout, "%s: no problems found (%d image(s) in the chain)\n", image, d.Depth()+1)
		}
	}
	if len(probs) > 0 {
		return exitFail
	}
	return exitOK
}
