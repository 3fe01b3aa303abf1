// Package mountinfo reads the mount table of this process
// (/proc/self/mountinfo): what vhdmount checks before mounting, and what the
// bench and the integration tests poll for readiness and leftovers.
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// VhdmountType is the filesystem type of a vhdmount mount.
const VhdmountType = "fuse.vhdmount"

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point   string // mount point
	Options string // per-mount options (rw, ro, nosuid, …)
	FSType  string // e.g. fuse.vhdmount
	Source  string // e.g. the image path vhdmount gives as FsName
}

// ReadOnly reports whether the mount is read-only.
func (m Mount) ReadOnly() bool {
	for _, o := range strings.Split(m.Options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// List returns the mounts of this process's mount namespace.
func List() ([]Mount, error) { return read("/proc/self/mountinfo") }

// ListPid returns the mounts of the mount namespace of process pid, which
// may differ from this process's (unshare --mount).
func ListPid(pid int) ([]Mount, error) {
	return read("/proc/" + strconv.Itoa(pid) + "/mountinfo")
}

func read(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point options [optional…] - fstype source super
		fs := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fs {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || sep+2 >= len(fs) {
			continue
		}
		out = append(out, Mount{Point: unescape(fs[4]), Options: fs[5], FSType: fs[sep+1], Source: unescape(fs[sep+2])})
	}
	return out, sc.Err()
}

// Lookup returns the mount whose mount point is path, if there is one.
func Lookup(path string) (Mount, bool, error) {
	ms, err := List()
	for _, m := range ms {
		if m.Point == path {
			return m, true, nil
		}
	}
	return Mount{}, false, err
}

// unescape undoes mountinfo's octal escapes (\040 for a space, …).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
