package format

// Warnings returns what the images of the chain accepted when opened but
// found doubtful (for a VHDX, a parent matched only through the deprecated
// parent_linkage2), one line each, prefixed with the path of the image
// concerned, the opened image first. It reads nothing from the files.
func (d *Disk) Warnings() []string {
	var out []string
	for _, l := range d.layers {
		w, ok := l.(interface{ Warnings() []string })
		if !ok {
			continue
		}
		for _, m := range w.Warnings() {
			out = append(out, l.Path()+": "+m)
		}
	}
	return out
}
