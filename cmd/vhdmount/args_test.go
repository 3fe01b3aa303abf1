package main

import (
	"bytes"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want config
		err  string
	}{
		{[]string{"a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt"}, ""},
		{[]string{"--ro", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", ro: true}, ""},
		{[]string{"a.vhd", "/mnt", "-o", "ro,allow_other"}, config{image: "a.vhd", mountpoint: "/mnt", ro: true, allowOther: true}, ""},
		{[]string{"-oro", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", ro: true}, ""},
		{[]string{"a.vhd", "-o", "rw,nosuid,nodev,nofail,_netdev,x-systemd.automount", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt"}, ""},
		{[]string{"-f", "--parent", "p.vhd", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", foreground: true, parent: "p.vhd"}, ""},
		{[]string{"a.vhd", "/mnt", "-o", "parent=/x/p.vhd,debug"}, config{image: "a.vhd", mountpoint: "/mnt", foreground: true, debug: true, parent: "/x/p.vhd"}, ""},
		{[]string{"--ignore-checksums", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", ro: true, ignoreChecksums: true}, ""},
		{[]string{"--", "-weird.vhd", "/mnt"}, config{image: "-weird.vhd", mountpoint: "/mnt"}, ""},
		{[]string{"a.vhd"}, config{}, "want IMAGE and MOUNTPOINT"},
		{[]string{"a.vhd", "/mnt", "-o", "bogus"}, config{}, `unknown mount option "bogus"`},
		{[]string{"--bogus", "a.vhd", "/mnt"}, config{}, "unknown option --bogus"},
		{[]string{"a.vhd", "/mnt", "-o"}, config{}, "needs a value"},
		{[]string{"a.vhd", ""}, config{}, "MOUNTPOINT is empty"},
		{[]string{"", "/mnt"}, config{}, "IMAGE is empty"},
		{[]string{"--", "a.vhd", ""}, config{}, "MOUNTPOINT is empty"},
		{[]string{"--log", "/var/log/v.log", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", logFile: "/var/log/v.log"}, ""},
		{[]string{"--log=v.log", "--parent=p.vhd", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", logFile: "v.log", parent: "p.vhd"}, ""},
		{[]string{"a.vhd", "/mnt", "-o", "ro,log=/tmp/x.log"}, config{image: "a.vhd", mountpoint: "/mnt", ro: true, logFile: "/tmp/x.log"}, ""},
		{[]string{"a.vhd", "/mnt", "-o", "log="}, config{}, "non-empty value"},
		{[]string{"--ro=yes", "a.vhd", "/mnt"}, config{}, "takes no value"},
		{[]string{"--no-partitions", "a.vhd", "/mnt"}, config{image: "a.vhd", mountpoint: "/mnt", noPartitions: true}, ""},
		{[]string{"a.vhd", "/mnt", "-o", "ro,no_partitions"}, config{image: "a.vhd", mountpoint: "/mnt", ro: true, noPartitions: true}, ""},
		{[]string{"-h"}, config{help: true}, ""},
		{[]string{"a.vhd", "--help"}, config{help: true}, ""},
		{[]string{"--version"}, config{version: true}, ""},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			got, err := parseArgs(c.args)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, c.want) {
				t.Fatalf("got %+v, want %+v", *got, c.want)
			}
		})
	}
}

// TestUsageMatchesFlags: every option the usage text names is accepted, and
// the spellings it does not name (aliases older versions took) are refused.
func TestUsageMatchesFlags(t *testing.T) {
	_, opts, _ := strings.Cut(usageText, "\nOptions")
	opts, _, _ = strings.Cut(opts, "\nGeneric")
	_, opts, _ = strings.Cut(opts, "\n") // the heading's "-o opt1,opt2,..."
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?:^|[\s,])(--?[a-z][a-z-]*)([= ][A-Z]+)?`).FindAllStringSubmatch(opts, -1) {
		flag, arg := m[1], m[2]
		named[flag] = true
		args := []string{flag}
		switch {
		case flag == "-o":
			continue // its values are checked below
		case strings.HasPrefix(arg, "="):
			args = []string{flag + "=x"}
		case arg != "":
			args = append(args, "x")
		}
		if _, err := parseArgs(append(args, "a.vhd", "/mnt")); err != nil {
			t.Errorf("usage names %s, but parseArgs refuses it: %v", flag, err)
		}
	}
	for _, m := range regexp.MustCompile(`-o ([a-z_]+)(=?)`).FindAllStringSubmatch(opts, -1) {
		o := m[1]
		if m[2] == "=" {
			o += "=x"
		}
		if _, err := parseArgs([]string{"-o", o, "a.vhd", "/mnt"}); err != nil {
			t.Errorf("usage names -o %s, but parseArgs refuses it: %v", o, err)
		}
	}
	if len(named) < 10 {
		t.Fatalf("found only %d options in the usage text: %v", len(named), named)
	}
	for _, a := range []string{"-ro", "-r", "-w", "--rw", "-fg", "-debug", "-help", "-parent", "-allow-other", "-log"} {
		if named[a] {
			continue
		}
		if _, err := parseArgs([]string{a, "x", "a.vhd", "/mnt"}); err == nil {
			t.Errorf("parseArgs accepts %s, which the usage text does not name", a)
		}
	}
}

// TestUsageErrors: a usage error is one line on stderr naming the problem
// and pointing at --help, exit 2; --help is the usage on stdout, exit 0.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"x.vhd", ""}, {"x.vhd"}, {"--bogus", "x.vhd", "/mnt"}, {}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		e := errb.String()
		if out.Len() != 0 || strings.Count(e, "\n") != 1 || !strings.HasPrefix(e, "vhdmount: ") || !strings.Contains(e, "see 'vhdmount --help'") {
			t.Errorf("%q: stdout %q, stderr %q; want one line on stderr pointing at --help", args, out.String(), e)
		}
	}
	for _, a := range []string{"-h", "--help"} {
		var out, errb bytes.Buffer
		if code := run([]string{a}, &out, &errb); code != exitOK || out.String() != usageText || errb.Len() != 0 {
			t.Errorf("%s: exit %d, stdout %d bytes, stderr %q; want 0 and the usage on stdout", a, code, out.Len(), errb.String())
		}
	}
}
