package main

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vhdmount/vhdmount/format"
)

func cmdCommit(args []string, stdout, stderr io.Writer) int {
	c := newCommand("commit", []string{
		"commit [--remove] [--force] CHILD",
	}, `Write the data of the differencing disk CHILD into its parent, sector for
sector, then empty CHILD (it stays a valid, empty child of the parent), or
delete it with --remove. At every instant the chain CHILD -> parent reads the
same: the parent is written and synced before CHILD is emptied. Refused when
CHILD or its parent is in use, when the parent is damaged or read-only by
its mode, with --remove when CHILD is a symbolic link, and, unless
--force, when other children of the parent are found in its directory (their
contents would change) or, with --remove, children of CHILD in its own.
A VHDX CHILD (.avhdx) is committed into its VHDX parent the same way; the
parent's new DataWriteGuid is announced to CHILD (parent_linkage2) before
the parent changes and becomes its parent_linkage at the end.`, stdout, stderr)
	remove := c.fs.Bool("remove", false, "delete CHILD once its data is in the parent, instead of emptying it")
	force := c.fs.Bool("force", false, "commit although other children of the parent (or, with --remove, of CHILD) were found")
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usageErr("want CHILD, got %d arguments", len(pos))
	}
	var bar *progress
	var once sync.Once
	o := format.CommitOptions{Remove: *remove, Force: *force}
	o.Progress = func(done, total int64) {
		once.Do(func() { bar = newProgress(stderr, total) })
		if bar != nil {
			bar.done.Store(done)
		}
	}
	res, err := format.Commit(pos[0], o)
	bar.finish()
	if err != nil {
		var se *format.SiblingError
		var ce *format.ChildrenError
		switch {
		case errors.As(err, &se):
			fmt.Fprintf(stderr, "vhd: %s has other children beside it, whose contents would change if CHILD were committed into it:\n", se.Parent)
			for _, s := range se.Siblings {
				fmt.Fprintf(stderr, "  %s\n", s)
			}
			fmt.Fprintln(stderr, "vhd: nothing written; use --force to commit anyway")
			return exitFail
		case errors.As(err, &ce):
			fmt.Fprintf(stderr, "vhd: %s is the parent of:\n", ce.Image)
			for _, s := range ce.Children {
				fmt.Fprintf(stderr, "  %s\n", s)
			}
			fmt.Fprintln(stderr, "vhd: nothing written; removing it would orphan them (use --force to remove it anyway, or commit without --remove)")
			return exitFail
		}
		return fail(stderr, err)
	}
	what := "emptied"
	if res.Removed {
		what = "removed"
	}
	fmt.Fprintf(stdout, "committed %s into %s: %d bytes (%s) from %d blocks; %s %s\n",
		res.Child, res.Parent, res.Bytes, humanSize(res.Bytes), res.Blocks, what, res.Child)
	return exitOK
}
