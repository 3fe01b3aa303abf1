package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", "check [--json] [--parent PATH] IMAGE", stderr)
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	parent := fs.String("parent", "", "use `PATH` as the image's parent instead of its locators")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitUsage
	}
	// Checksums are reported as problems, not refused, so open ignoring them.
	d, err := format.Open(pos[0], &format.Options{ReadOnly: true, IgnoreChecksums: true, Parent: *parent})
	if err != nil {
		fmt.Fprintf(stderr, "vhd: cannot check: %v\n", trimPrefix(err))
		return exitCantRead
	}
	defer d.Close()
	probs := d.Check()
	if *asJSON {
		out := struct {
			Image    string           `json:"image"`
			Layers   int              `json:"layers"`
			Clean    bool             `json:"clean"`
			Problems []format.Problem `json:"problems"`
		}{pos[0], d.Depth() + 1, len(probs) == 0, probs}
		if out.Problems == nil {
			out.Problems = []format.Problem{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		for _, p := range probs {
			fmt.Fprintln(stdout, p)
		}
		if len(probs) == 0 {
			fmt.Fprintf(stdout, "%s: no problems found (%d image(s) in the chain)\n", pos[0], d.Depth()+1)
		}
	}
	if len(probs) > 0 {
		return exitFail
	}
	return exitOK
}
