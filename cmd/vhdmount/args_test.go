package main

import (
	"reflect"
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
