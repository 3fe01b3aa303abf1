// Command vhd inspects, creates, converts and checks VHD and VHDX images.
//
//	vhd info [--json] [--parent PATH] IMAGE
//	vhd create [--format vhd|vhdx] [-t fixed|dynamic] [--block-size N] [--sector-size 512|4096] [--azure] IMAGE SIZE
//	vhd create [--format vhd|vhdx] --parent PARENT [--block-size N] IMAGE
//	vhd convert -O raw|fixed|dynamic|vhdx|vhdx-fixed [-f vhd|raw] [--block-size N] [--sector-size 512|4096] [--parent PATH] [--azure] [--force] [--sync] SRC DST
//	vhd check [--json] [--parent PATH] [--azure] IMAGE
//	vhd resize [--shrink] [--parent PATH] IMAGE [+|-]SIZE
//	vhd compact [--parent PATH] IMAGE
//	vhd commit [--remove] [--force] CHILD
//	vhd relink --parent NEWPATH CHILD
//	vhd --version
//
// Exit status: 0 success, 1 failure (for check: problems found), 2 usage
// error (for check also: the image could not be read); after SIGINT, SIGTERM
// or SIGHUP, convert exits 128 + the signal number.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vhdmount/vhdmount/format"
	"github.com/vhdmount/vhdmount/internal/version"
)

// Exit codes.
const (
	exitOK       = 0 // success; check: no problems
	exitFail     = 1 // the operation failed; check: problems found
	exitUsage    = 2 // bad command line
	exitCantRead = 2 // check: the image could not be read
)

const usage = `usage: vhd COMMAND [options] ARGS

Commands:
  info [--json] [--parent PATH] IMAGE
        describe an image and its chain of parents
  create [--format vhd|vhdx] [-t fixed|dynamic] [--block-size N] [--sector-size 512|4096] [--azure] IMAGE SIZE
        create an empty image (SIZE like 64M, 10G, 1T; a VHD at most
        2040G, a VHDX 64T; VHDX for --format vhdx or a name *.vhdx,
        *.avhdx; --azure: fixed VHD, rounded up to a whole MiB for Azure)
  create [--format vhd|vhdx] --parent PARENT [--block-size N] IMAGE
        create an empty differencing disk over PARENT
  convert -O raw|fixed|dynamic|vhdx|vhdx-fixed [-f vhd|raw] [--block-size N] [--sector-size 512|4096] [--parent PATH] [--azure] [--force] [--sync] SRC DST
        convert a VHD or VHDX (with its chain) or a raw disk to raw, VHD
        (fixed, dynamic) or VHDX (vhdx: dynamic, vhdx-fixed); unallocated
        and all-zero ranges stay sparse (--azure: with -O fixed, for Azure)
  check [--json] [--parent PATH] [--azure] IMAGE
        validate the structure of an image and its chain (--azure: and
        what Azure requires of an uploaded disk)
  resize [--shrink] [--parent PATH] IMAGE [+|-]SIZE
        change the virtual size of an image
  compact [--parent PATH] IMAGE
        give back the space of all-zero blocks and gaps
  commit [--remove] [--force] CHILD
        write a differencing disk's data into its parent, then empty
        (or remove) it
  relink --parent NEWPATH CHILD
        point a differencing disk at its moved or renamed parent

Run 'vhd COMMAND --help' for the options of a command, 'vhd --version' for
the version.
Exit status: 0 success, 1 failure (check: problems found), 2 usage error
(check: the image could not be read), 128+N after signal N (convert).
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "vhd: no command given; see 'vhd --help'")
		return exitUsage
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) int{
		"info":    cmdInfo,
		"create":  cmdCreate,
		"convert": cmdConvert,
		"check":   cmdCheck,
		"resize":  cmdResize,
		"compact": cmdCompact,
		"commit":  cmdCommit,
		"relink":  cmdRelink,
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "--version", "-version":
		fmt.Fprintln(stdout, "vhd "+version.String())
		return exitOK
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "vhd: unknown command %s; see 'vhd --help'\n", quote(args[0]))
		return exitUsage
	}
	return cmd(args[1:], stdout, stderr)
}

// command is the command line of one subcommand: its flags and how to
// report usage errors and --help.
type command struct {
	name     string
	synopsis []string // usage lines after "vhd "
	about    string
	fs       *flag.FlagSet
	stdout   io.Writer
	stderr   io.Writer
}

func newCommand(name string, synopsis []string, about string, stdout, stderr io.Writer) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by usageErr, help by help
	fs.Usage = func() {}
	return &command{name, synopsis, about, fs, stdout, stderr}
}

// help prints the usage lines, what the command does and every flag to stdout.
func (c *command) help() {
	w := c.stdout
	for i, s := range c.synopsis {
		if i == 0 {
			fmt.Fprintf(w, "usage: vhd %s\n", s)
		} else {
			fmt.Fprintf(w, "       vhd %s\n", s)
		}
	}
	fmt.Fprintf(w, "\n%s\n\nOptions:\n", c.about)
	c.fs.VisitAll(func(f *flag.Flag) {
		arg, text := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		name := dash + f.Name
		if arg != "" {
			name += " " + arg
		}
		fmt.Fprintf(w, "  %s\n        %s\n", name, text)
	})
	fmt.Fprintln(w, "  -h, --help\n        print this help")
}

// usageErr prints one line for a bad command line and returns exitUsage.
func (c *command) usageErr(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "vhd %s: %s; see 'vhd %s --help'\n", c.name, fmt.Sprintf(format, args...), c.name)
	return exitUsage
}

// parse parses flags that may come before, between or after the positional
// arguments, and returns the positional ones; "--" ends flags, and an
// argument like -5 is positional (no flag starts with a digit). ok is false
// when the command must end with code: after --help (0) or a usage error (2).
func (c *command) parse(args []string) (pos []string, code int, ok bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' || (a[1] >= '0' && a[1] <= '9') {
			pos = append(pos, a)
			continue
		}
		seg := []string{a}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := c.fs.Lookup(name); f != nil && !hasValue && !isBool(f) && i+1 < len(args) {
			seg = append(seg, args[i+1])
			i++
		}
		if err := c.fs.Parse(seg); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.help()
				return nil, exitOK, false
			}
			return nil, c.usageErr("%v", err), false
		}
	}
	return pos, 0, true
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// set reports which flags were given on the command line.
func (c *command) set() map[string]bool {
	m := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fail prints one line for err and returns exitFail.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "vhd: "+message(err))
	return exitFail
}

// message is err's text for one line on stderr: without the "vhd: "
// prefixes of format's errors, and paths as stored (a missing parent's
// tried paths are composed here rather than quoted by %q).
func message(err error) string {
	var pe *format.ParentError
	if errors.As(err, &pe) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s (wanted parent uuid %s)", pe.Child, trimVHD(pe.Err.Error()), pe.ParentUUID)
		if len(pe.Tried) == 0 {
			b.WriteString("; the image records no parent name or locator")
		}
		for i, a := range pe.Tried {
			sep := "; "
			if i == 0 {
				sep = "; tried: "
			}
			fmt.Fprintf(&b, "%s%s %s -> %s: %s", sep, a.Source, quote(a.Raw), a.Path, a.Reason)
		}
		return b.String()
	}
	// An open or stat error, maybe behind "vhd: ": the file, then the problem.
	var fe *fs.PathError
	if errors.As(err, &fe) && trimVHD(err.Error()) == fe.Error() {
		return fe.Path + ": " + fe.Err.Error()
	}
	return trimVHD(err.Error())
}

// trimVHD removes the "vhd: " that format's errors start with, also where
// one error's text was composed into another's.
func trimVHD(s string) string {
	return strings.ReplaceAll(strings.TrimPrefix(s, "vhd: "), ": vhd: ", ": ")
}

// quote puts s in double quotes, escaping quotes and what is not printable
// but leaving backslashes as they are, so Windows paths read as stored.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == '"':
			b.WriteString(`\"`)
		case !unicode.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		s = s[n:]
	}
	b.WriteByte('"')
	return b.String()
}

// parseSize parses sizes like 512, 64K, 64M, 10G, 1T, 10GiB (binary units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	switch {
	case err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(t, "-"):
		return 0, fmt.Errorf("%s is too large", s)
	case err != nil || t == "" || t[0] == '+':
		return 0, fmt.Errorf("%s: want a whole number with an optional K, M, G or T suffix, like 64M or 10G", quote(s))
	case n <= 0:
		return 0, fmt.Errorf("%s: must be positive", s)
	case n > (1<<62)/mult:
		return 0, fmt.Errorf("%s is too large", s)
	}
	return n * mult, nil
}

// parseDiskSize parses the virtual size of a new disk: a multiple of 512 up
// to the format's limit of 2040 GiB.
func parseDiskSize(s string) (int64, error) {
	n, err := parseSize(s)
	switch {
	case err != nil:
		return 0, err
	case n > format.MaxVirtualSize:
		return 0, fmt.Errorf("%s is larger than the VHD limit of 2040 GiB", s)
	case n%format.SectorSize != 0:
		return 0, fmt.Errorf("%s (%d bytes) is not a multiple of 512", s, n)
	}
	return n, nil
}

// parseBlockSize parses a block size: a power of two from 512 to 256 MiB.
func parseBlockSize(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	if n < format.SectorSize || n > 256<<20 || n&(n-1) != 0 {
		return 0, fmt.Errorf("%s: want a power of two from 512 to 256M", s)
	}
	return n, nil
}

// parseVHDXBlockSize reads a VHDX block size: a power of two from 1M to 256M.
func parseVHDXBlockSize(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	if n < 1<<20 || n > 256<<20 || n&(n-1) != 0 {
		return 0, fmt.Errorf("%s: want a power of two from 1M to 256M", s)
	}
	return n, nil
}

// humanSize formats n bytes with a binary unit.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}
