// Package version says which build of the commands is running, from the
// build information the Go toolchain records in the binary.
package version

import (
	"runtime/debug"
	"strings"
)

// String returns one line for --version: the module version (as set by
// `go install module@version`), else the VCS revision with "+dirty" for a
// build from a modified tree, else "devel"; then the Go version, e.g.
// "v1.2.0 (go1.24.1)" or "3f2a9c1d0b7e+dirty 2026-11-26T12:00:00Z (go1.24.1)".
func String() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	return format(bi)
}

func format(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" || v == "(devel)" || strings.Contains(v, "+dirty") || strings.HasPrefix(v, "v0.0.0-") {
		var rev, at string
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			v = rev
			if dirty {
				v += "+dirty"
			}
			if at != "" {
				v += " " + at
			}
		} else if v == "" {
			v = "devel"
		}
	}
	return v + " (" + bi.GoVersion + ")"
}
