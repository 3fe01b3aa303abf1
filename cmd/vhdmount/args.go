package main

import (
	"errors"
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
	noPartitions      bool
	logFile           string
	overlay           string // --overlay CHILD
	snapshot          bool   // --snapshot
	child             string // the overlay or snapshot child mounted (set when it is ready)
	help              bool
	version           bool
}

const usageText = `usage: vhdmount [options] IMAGE MOUNTPOINT

Mounts the VHD or VHDX IMAGE (fixed, dynamic, or differencing with its
chain of parents: an AVHDX checkpoint chain too) read-write at MOUNTPOINT
as a file, MOUNTPOINT/disk.raw, the whole virtual
disk, and beside it one file per partition of the disk's MBR or GPT table,
MOUNTPOINT/p1, p2... (read once at mount). Returns once the mount is live;
the server runs in the background until 'umount MOUNTPOINT' (or
'fusermount3 -u MOUNTPOINT').

Options (also accepted as -o opt1,opt2,... anywhere on the line):
  --ro, -o ro              mount read-only (also when IMAGE is not writable)
  --allow-other, -o allow_other
                           let other users use the mount (non-root needs
                           user_allow_other in /etc/fuse.conf)
  -f, --foreground         stay in the foreground; SIGINT/SIGTERM unmount
  -d, --debug, -o debug    log every FUSE request (implies --foreground)
  --parent PATH, --parent=PATH, -o parent=PATH
                           use PATH as IMAGE's parent instead of its locators
  --overlay CHILD, --overlay=CHILD, -o overlay=CHILD
                           mount read-write the differencing disk CHILD
                           over IMAGE, created (with IMAGE's format and
                           block size: an .avhdx over a VHDX) unless it is
                           already a child of IMAGE; writes go to CHILD,
                           IMAGE and its parents are only read
  --snapshot, -o snapshot  the same with a temporary child, removed when
                           the mount ends; works on an image you cannot
                           write ($TMPDIR/vhdmount-snapshots-UID, default
                           /var/tmp/...)
  --ignore-checksums, -o ignore_checksums
                           accept bad footer/header checksums (forces --ro)
  --no-partitions, -o no_partitions
                           show disk.raw only, no partition files
  --log FILE, --log=FILE, -o log=FILE
                           also append what the server reports (I/O errors,
                           failures at exit) to FILE; without it a detached
                           server reports to syslog, a foreground one to
                           stderr
  -h, --help               show this help
  --version                print the version and exit

Generic mount options (defaults, nofail, _netdev, noauto, user, dev, suid,
exec and their negations, x-*) are accepted and ignored, so vhdmount works
as 'mount -t fuse.vhdmount IMAGE MOUNTPOINT' and in /etc/fstab.

Exit status: 0 mounted (or, with -f, unmounted cleanly); 1 the mount failed,
or the image could not be synced or was deleted or moved while mounted;
2 usage error.
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
// after the two positional arguments. Every option it accepts is in
// usageText, and every option usageText names is accepted (args_test.go
// checks both).
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
		name, val, hasVal := strings.Cut(a, "=")
		if !strings.HasPrefix(a, "--") || a == "--" {
			name, val, hasVal = a, "", false
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
		case strings.HasPrefix(a, "-o"):
			if err := c.mountOptions(a[2:]); err != nil {
				return nil, err
			}
		case name == "--parent" || name == "--log" || name == "--overlay":
			v := val
			if !hasVal {
				var err error
				if v, err = next(); err != nil {
					return nil, err
				}
			}
			if err := c.set(name[2:], v); err != nil {
				return nil, err
			}
		case hasVal:
			return nil, fmt.Errorf("option %s takes no value", name)
		case a == "--ro":
			c.ro = true
		case a == "--allow-other":
			c.allowOther = true
		case a == "--snapshot":
			c.snapshot = true
		case a == "-f" || a == "--foreground":
			c.foreground = true
		case a == "-d" || a == "--debug":
			c.debug, c.foreground = true, true
		case a == "--ignore-checksums":
			c.ignoreChecksums, c.ro = true, true
		case a == "--no-partitions":
			c.noPartitions = true
		case a == "-h" || a == "--help":
			c.help = true
		case a == "--version":
			c.version = true
		case strings.HasPrefix(a, "-") && a != "-":
			return nil, fmt.Errorf("unknown option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if c.help || c.version {
		return c, nil
	}
	if len(pos) != 2 {
		return nil, fmt.Errorf("want IMAGE and MOUNTPOINT, got %d argument(s)", len(pos))
	}
	c.image, c.mountpoint = pos[0], pos[1]
	if err := c.checkOverlay(); err != nil {
		return nil, err
	}
	// An empty path would mean the working directory to mount(2) and to
	// filepath.Abs: refuse it rather than mount over where the user stands.
	if c.image == "" {
		return nil, errors.New("IMAGE is empty")
	}
	if c.mountpoint == "" {
		return nil, errors.New("MOUNTPOINT is empty")
	}
	return c, nil
}

// set applies an option that takes a value.
func (c *config) set(name, v string) error {
	if v == "" {
		return fmt.Errorf("option %s needs a non-empty value", name)
	}
	switch name {
	case "parent":
		c.parent = v
	case "log":
		c.logFile = v
	case "overlay":
		c.overlay = v
	}
	return nil
}

// checkOverlay refuses what does not combine with --overlay or --snapshot.
func (c *config) checkOverlay() error {
	what := "--overlay"
	switch {
	case c.overlay != "" && c.snapshot:
		return errors.New("--overlay and --snapshot exclude each other")
	case c.snapshot:
		what = "--snapshot"
	case c.overlay == "":
		return nil
	}
	switch {
	case c.ignoreChecksums:
		return fmt.Errorf("%s needs a writable mount; --ignore-checksums mounts read-only", what)
	case c.ro:
		return fmt.Errorf("%s mounts read-write; drop --ro (a read-only mount needs no overlay)", what)
	case c.parent != "":
		return fmt.Errorf("--parent does not combine with %s (it would name the overlay's parent, which is IMAGE)", what)
	}
	return nil
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
		case k == "snapshot" && !hasV:
			c.snapshot = true
		case k == "no_partitions":
			c.noPartitions = true
		case (k == "parent" || k == "log" || k == "overlay") && hasV:
			if err := c.set(k, v); err != nil {
				return err
			}
		case ignoredMountOptions[k], strings.HasPrefix(k, "x-"), k == "comment":
		default:
			return fmt.Errorf("unknown mount option %q", o)
		}
	}
	return nil
}
