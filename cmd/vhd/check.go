package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	var azure *bool
	image, asJSON, parent, code, ok := imageCommand("check", "validate the structure of an image and its chain; exit 0 when clean,\n1 when problems are found, 2 when the image cannot be read. With --azure, also\nlist every reason Azure would refuse the image as an uploaded disk.", args, stdout, stderr,
		func(fs *flag.FlagSet) {
			azure = fs.Bool("azure", false, "also check what Azure requires of an uploaded disk (a fixed VHD, a whole number of MiB, 20 MiB to 32 TiB, footer at the end)")
		})
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
	var az []string
	if *azure {
		az = d.AzureProblems()
		if d.Depth() > 0 {
			az = append([]string{fmt.Sprintf("a differencing disk over %d parent(s): Azure takes one fixed VHD (vhd convert -O fixed --azure)", d.Depth())}, az...)
		}
	}
	if asJSON {
		out := struct {
			Image    string           `json:"image"`
			Layers   int              `json:"layers"`
			Clean    bool             `json:"clean"`
			Problems []format.Problem `json:"problems"`
			Azure    *[]string        `json:"azure_problems,omitempty"`
		}{image, d.Depth() + 1, len(probs) == 0 && len(az) == 0, probs, nil}
		if out.Problems == nil {
			out.Problems = []format.Problem{}
		}
		if *azure {
			if az == nil {
				az = []string{}
			}
			out.Azure = &az
		}
		writeJSON(stdout, out)
	} else {
		for _, p := range probs {
			fmt.Fprintln(stdout, p)
		}
		for _, p := range az {
			fmt.Fprintf(stdout, "%s: Azure would refuse it: %s\n", image, p)
		}
		switch {
		case len(probs) == 0 && len(az) == 0 && *azure:
			fmt.Fprintf(stdout, "%s: no problems found; Azure requirements met\n", image)
		case len(probs) == 0 && len(az) == 0:
			fmt.Fprintf(stdout, "%s: no problems found (%d image(s) in the chain)\n", image, d.Depth()+1)
		}
	}
	if len(probs) > 0 || len(az) > 0 {
		return exitFail
	}
	return exitOK
}

// imageCommand parses the command line of a command that takes one IMAGE
// and the --json and --parent flags (info, check). ok is false when the
// command must end with code (after --help or a usage error, reported).
// extra, if given, adds more flags.
func imageCommand(name, about string, args []string, stdout, stderr io.Writer, extra ...func(*flag.FlagSet)) (image string, asJSON bool, parent string, code int, ok bool) {
	line := name + " [--json] [--parent PATH] IMAGE"
	if name == "check" {
		line = name + " [--json] [--parent PATH] [--azure] IMAGE"
	}
	c := newCommand(name, []string{line}, strings.ToUpper(about[:1])+about[1:], stdout, stderr)
	j := c.fs.Bool("json", false, "print JSON instead of text")
	p := c.fs.String("parent", "", "use `PATH` as the image's parent instead of its locators (its unique id must still match)")
	for _, f := range extra {
		f(c.fs)
	}
	pos, code, ok := c.parse(args)
	if !ok {
		return "", false, "", code, false
	}
	if len(pos) != 1 {
		return "", false, "", c.usageErr("want one IMAGE, got %d arguments", len(pos)), false
	}
	return pos[0], *j, *p, 0, true
}
