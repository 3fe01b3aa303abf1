// Command vhd inspects, creates, converts and checks VHD images.
//
//	vhd info [--json] IMAGE
//	vhd create [-t fixed|dynamic] [--block-size N] IMAGE SIZE
//	vhd create --parent PARENT IMAGE
//	vhd convert -O raw|fixed|dynamic [--force] SRC DST
//	vhd check [--json] IMAGE
//
// Exit status: 0 success, 1 failure (for check: problems found), 2 usage
// error (for check: the image could not be read).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
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
  info [--json] IMAGE                      describe an image and its chain of parents
  create [-t fixed|dynamic] [--block-size N] IMAGE SIZE
                                           create an empty image (SIZE like 64M, 10G, 1T)
  create --parent PARENT IMAGE             create an empty differencing disk over PARENT
  convert -O raw|fixed|dynamic [--force] SRC DST
                                           convert a VHD (with its chain) or a raw file;
                                           unallocated and all-zero ranges stay sparse
  check [--json] IMAGE                     validate the structure of an image and its chain

Run 'vhd COMMAND -h' for the options of a command.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) int{
		"info":    cmdInfo,
		"create":  cmdCreate,
		"convert": cmdConvert,
		"check":   cmdCheck,
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "vhd: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return cmd(args[1:], stdout, stderr)
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments, and returns the positional ones. "--" ends flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newFlagSet returns a FlagSet whose usage prints synopsis and the flags.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vhd %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// imageCommand parses the command line of a command that takes one IMAGE
// and the --json and --parent flags (info, check). ok is false after a usage
// error, which has been reported.
func imageCommand(name string, args []string, stderr io.Writer) (image string, asJSON bool, parent string, ok bool) {
	fs := newFlagSet(name, name+" [--json] [--parent PATH] IMAGE", stderr)
	j := fs.Bool("json", false, "print JSON instead of text")
	p := fs.String("parent", "", "use `PATH` as the image's parent instead of its locators")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return "", false, "", false
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", false, "", false
	}
	return pos[0], *j, *p, true
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fail prints one line for err and returns exitFail.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "vhd: "+trimPrefix(err))
	return exitFail
}

// trimPrefix returns err's message without the "vhd: " that format's errors start with.
func trimPrefix(err error) string { return strings.TrimPrefix(err.Error(), "vhd: ") }

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
	var n int64
	if _, err := fmt.Sscanf(t, "%d", &n); err != nil || fmt.Sprint(n) != t || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive whole number with an optional K, M, G or T suffix", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
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
