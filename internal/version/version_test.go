package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-11-26T12:00:00Z"}, {Key: "vcs.modified", Value: "true"}}
	for _, c := range []struct {
		version  string
		settings []debug.BuildSetting
		want     string
	}{
		{"v1.2.0", vcs, "v1.2.0 (go1.24.1)"},
		{"(devel)", vcs, "0123456789ab+dirty 2026-11-26T12:00:00Z (go1.24.1)"},
		{"(devel)", vcs[:1], "0123456789ab (go1.24.1)"},
		{"(devel)", nil, "(devel) (go1.24.1)"},
		{"", nil, "devel (go1.24.1)"},
		{"v0.0.0-20261126120000-0123456789ab+dirty", vcs, "0123456789ab+dirty 2026-11-26T12:00:00Z (go1.24.1)"},
	} {
		bi := &debug.BuildInfo{GoVersion: "go1.24.1", Main: debug.Module{Version: c.version}, Settings: c.settings}
		if got := format(bi); got != c.want {
			t.Errorf("%q: got %q, want %q", c.version, got, c.want)
		}
	}
	if s := String(); !strings.Contains(s, "(go1.") {
		t.Errorf("String() = %q: no Go version", s)
	}
}
