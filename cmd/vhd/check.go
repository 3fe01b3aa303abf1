package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	image, asJSON, parent, code, ok := imageCommand("check", "validate the structure of an image and its chain; exit 0 when clean,\n1 when problems are found, 2 when the image cannot be read.", args, stdout, stderr)
	if !ok {
		return code
	}
	// Checksums are reported as problems, not refused, so open ignoring them.
	d, err := format.Open(image, &format.Options{ReadOnly: true, IgnoreChecksums: true, Parent: parent})
	if err != nil {
		fmt.Fprintf(stderr, "vhd: cannot check: %s\n", message(err))
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

// imageCommand parses the command line of a command that takes one IMAGE
// and the --json and --parent flags (info, check). ok is false when the
// command must end with code (after --help or a usage error, reported).
func imageCommand(name, about string, args []string, stdout, stderr io.Writer) (image string, asJSON bool, parent string, code int, ok bool) {
	c := newCommand(name, []string{name + " [--json] [--parent PATH] IMAGE"}, strings.ToUpper(about[:1])+about[1:], stdout, stderr)
	j := c.fs.Bool("json", false, "print JSON instead of text")
	p := c.fs.String("parent", "", "use `PATH` as the image's parent instead of its locators (its unique id must still match)")
	pos, code, ok := c.parse(args)
	if !ok {
		return "", false, "", code, false
	}
	if len(pos) != 1 {
		return "", false, "", c.usageErr("want one IMAGE, got %d arguments", len(pos)), false
	}
	return pos[0], *j, *p, 0, true
}
