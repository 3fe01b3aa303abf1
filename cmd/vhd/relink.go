package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/vhdmount/vhdmount/format"
)

func cmdRelink(args []string, stdout, stderr io.Writer) int {
	c := newCommand("relink", []string{
		"relink --parent NEWPATH CHILD",
	}, `Point the differencing disk CHILD at its parent, moved or renamed to
NEWPATH: rewrite its W2ku (absolute) and W2ru (relative) parent locators,
adding them when missing, a MacX locator when present, and the header's
parent name. NEWPATH's unique id must be the one CHILD records. Nothing else
in CHILD changes. A crash leaves CHILD as it was or relinked, never damaged.
For a VHDX child (.avhdx), NEWPATH must be a VHDX whose DataWriteGuid is
CHILD's parent_linkage: relative_path and absolute_win32_path are rewritten
(the header name printed is relative_path), volume_path, naming the old
place, is dropped, every other key is kept. A VHD parent for a VHDX child,
or the reverse, is refused.`, stdout, stderr)
	parent := c.fs.String("parent", "", "the parent's new path `NEWPATH` (required)")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if *parent == "" {
		return c.usageErr("--parent NEWPATH is required")
	}
	if len(pos) != 1 {
		return c.usageErr("want CHILD, got %d arguments", len(pos))
	}
	res, err := format.Relink(pos[0], *parent, nil)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "relinked %s to %s (header name %s", res.Child, res.Parent, quote(res.HeaderName))
	for _, x := range []struct {
		what  string
		codes []string
	}{{"rewritten", res.InPlace}, {"moved to new space", res.Relocated}, {"added", res.Added}} {
		if len(x.codes) > 0 {
			fmt.Fprintf(stdout, "; %s: %s", x.what, strings.Join(x.codes, ", "))
		}
	}
	fmt.Fprintln(stdout, ")")
	return exitOK
}
