package main

import (
	"fmt"
	"strings"
)

// config is the parsed command line.
type config struct {
	image, mountpoint string
	ro                bool
	allowOther        bool
	foreground        bool
	debug             bool
	parent            string
	ignoreChecksums   bool
	help              bool
}

const usageText = `usage: vhdmount [options] IMAGE MOUNTPOINT

Mounts the VHD IMAGE (fixed, dynamic, or differencing with its chain of
parents) at MOUNTPOINT as a single file, MOUNTPOINT/disk.raw, the whole
virtual disk. Returns once the mount is live; the server runs in the
background until 'umount MOUNTPOINT' (or 'fusermount3 -u MOUNTPOINT').

Options (also accepted as -o opt1,opt2,... anywhere on the line):
  --ro, -o ro              mount read-only (also when IMAGE is not writable)
  --allow-other, -o allow_other
                           let other users use the mount (non-root needs
                           user_allow_other in /etc/fuse.conf)
  -f, --foreground         stay in the foreground; SIGINT/SIGTERM unmount
  -d, --debug, -o debug    log every FUSE request (implies --foreground)
  --parent PATH, -o parent=PATH
                           use PATH as IMAGE's parent instead of its locators
  --ignore-checksums, -o ignore_checksums
                           accept bad footer/header checksums (forces --ro)
  -h, --help               show this help

Generic mount options (defaults, nofail, _netdev, noauto, user, dev, suid,
exec and their negations, x-*) are accepted and ignored, so vhdmount works
as 'mount -t fuse.vhdmount IMAGE MOUNTPOINT' and in /etc/fstab.

Exit status: 0 mounted (or, with -f, unmounted cleanly); 1 the mount failed
or the image could not be synced; 2 usage error.
`

// ignoredMountOptions are generic mount(8)/fstab options with no meaning here.
var ignoredMountOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "_netdev": true, "nofail": true, "dev": true, "nodev": true,
	"suid": true, "nosuid": true, "exec": true, "noexec": true, "atime": true, "noatime": true,
	"relatime": true, "norelatime": true, "strictatime": true, "diratime": true, "nodiratime": true,
	"async": true, "rw": true, "default_permissions": true,
}

// parseArgs parses the command line. Options may come before, between or
// after the two positional arguments.
func parseArgs(args []string) (*config, error) {
	c := &config{}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("option %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case a == "-o":
			v, err := next()
			if err != nil {
				return nil, err
			}
			if err := c.mountOptions(v); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--"):
			if err := c.mountOptions(a[2:]); err != nil {
				return nil, err
			}
		case a == "--ro" || a == "-ro" || a == "-r":
			c.ro = true
		case a == "--rw" || a == "-w":
			c.ro = false
		case a == "--allow-other" || a == "-allow-other":
			c.allowOther = true
		case a == "-f" || a == "--foreground" || a == "-fg":
			c.foreground = true
		case a == "-d" || a == "--debug" || a == "-debug":
			c.debug, c.foreground = true, true
		case a == "--ignore-checksums":
			c.ignoreChecksums, c.ro = true, true
		case a == "-h" || a == "--help" || a == "-help":
			c.help = true
		case a == "--parent" || a == "-parent":
			v, err := next()
			if err != nil {
				return nil, err
			}
			c.parent = v
		case strings.HasPrefix(a, "--parent="):
			c.parent = strings.TrimPrefix(a, "--parent=")
		case strings.HasPrefix(a, "-") && a != "-":
			return nil, fmt.Errorf("unknown option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if c.help {
		return c, nil
	}
	if len(pos) != 2 {
		return nil, fmt.Errorf("want IMAGE and MOUNTPOINT, got %d argument(s)", len(pos))
	}
	c.image, c.mountpoint = pos[0], pos[1]
	return c, nil
}

// mountOptions applies a comma-separated -o list.
func (c *config) mountOptions(list string) error {
	for _, o := range strings.Split(list, ",") {
		k, v, hasV := strings.Cut(strings.TrimSpace(o), "=")
		switch {
		case k == "":
		case k == "ro":
			c.ro = true
		case k == "allow_other":
			c.allowOther = true
		case k == "debug":
			c.debug, c.foreground = true, true
		case k == "ignore_checksums":
			c.ignoreChecksums, c.ro = true, true
		case k == "parent" && hasV:
			c.parent = v
		case ignoredMountOptions[k], strings.HasPrefix(k, "x-"), k == "comment":
		default:
			return fmt.Errorf("unknown mount option %q", o)
		}
	}
	return nil
}
