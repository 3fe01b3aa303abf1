package format

// ResizeOptions control Resize.
type ResizeOptions struct {
	// Shrink allows a size smaller than the current one; it is refused
	// anyway when anything is stored past the new end.
	Shrink bool
	// Open, if set, is how the image (and its chain) is opened; ReadOnly and
	// IgnoreChecksums are ignored.
	Open *Options
}

// Resize changes the virtual size of the VHD at path to size (a multiple of
// 512, at most MaxVirtualSize) and returns the old size. The image is opened
// for writing, so an image in use is refused (ErrLocked), as is a damaged
// one. Growing adds zeros at the end. A differencing disk may grow past its
// parent: the tail reads as zeros.
//
//   - Fixed: the new footer is written at the new end and synced; only then
//     is the old footer (now inside the data area) zeroed. A crash in
//     between leaves a valid disk of the new size whose 512 bytes at the old
//     end still hold the old footer. Shrinking (the range cut off must read
//     as zeros) writes the footer at the new end, syncs, then truncates the
//     file; a crash in between leaves the disk at its old size with the new
//     footer's 512 bytes at the new end, where zeros were.
//   - Dynamic and differencing: the sector bits of the last block past the
//     old end are cleared first (and that data zeroed); the BAT grows in
//     place when MaxTableEntries allows, else a new BAT is written past
//     everything (with the footer moved after it) and synced before the
//     header points at it; then the footer and its copy at offset 0 get the
//     new size. Shrinking is refused while any block or sector past the new
//     end is allocated. A crash between the two footer writes leaves an image
//     of the new size whose copy at offset 0 differs (vhd check says so).
func Resize(path string, size int64, o ResizeOptions) (old int64, err error) {
	opts := &Options{}
	if o.Open != nil {
		*opts = *o.Open
	}
	opts.ReadOnly, opts.IgnoreChecksums = false, false
	if err := refuseVHDX(opts, path, "resize"); err != nil {
		return 0, err
	}
	d, err := Open(path, opts)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := d.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	l, err := d.vhdTop(path, "resize")
	if err != nil {
		return 0, err
	}
	return l.Resize(size, o.Shrink)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
