package vhd

import (
	"fmt"
	"strings"
)

// Limits Azure puts on an uploaded disk (a fixed VHD). The sizes are the
// virtual sizes; the file is 512 bytes larger (the footer). Source: the
// UploadSizeBytes property of the Azure Compute API's DiskCreationData
// ("between 20972032 (20 MiB + 512 bytes for the VHD footer) and
// 35183298347520 bytes (32 TiB + 512 bytes for the VHD footer)"), and the
// Azure documentation on preparing a VHD: fixed type, virtual size a whole
// number of MiB. See docs/azure.md.
const (
	AzureMinSize  = 20 << 20 // smallest disk a managed-disk upload accepts
	AzureMaxSize  = 32 << 40 // largest disk a managed-disk upload accepts
	AzureSizeUnit = 1 << 20  // the virtual size must be a multiple of it
)

// AzureSize returns size rounded up to a whole MiB, or an error when Azure
// would refuse a disk of that size.
func AzureSize(size int64) (int64, error) {
	r := roundUp(size, AzureSizeUnit)
	switch {
	case r < AzureMinSize:
		return r, fmt.Errorf("%d bytes is below Azure's smallest uploaded disk, %d bytes (20 MiB)", r, int64(AzureMinSize))
	case r > AzureMaxSize:
		return r, fmt.Errorf("%d bytes is over Azure's largest uploaded disk, %d bytes (32 TiB)", r, int64(AzureMaxSize))
	}
	return r, nil
}

// AzureProblems lists every reason Azure would refuse the image as an
// uploaded disk (az disk create --upload-type Upload, or a page blob made
// into a disk): it must be a fixed VHD whose virtual size is a whole number
// of MiB within Azure's limits, with a valid footer at the very end of the
// file right after the data. An empty list means none was found.
func (l *Layer) AzureProblems() []string {
	var out []string
	if !l.fixed() {
		out = append(out, fmt.Sprintf("a %s disk: Azure takes a fixed VHD only (vhd convert -O fixed --azure)", typeNames[l.footer.DiskType]))
	}
	if l.size%AzureSizeUnit != 0 {
		out = append(out, fmt.Sprintf("virtual size %d bytes is not a whole number of MiB (round it up to %d: vhd resize)", l.size, roundUp(l.size, AzureSizeUnit)))
	}
	switch {
	case l.size < AzureMinSize:
		out = append(out, fmt.Sprintf("virtual size %d bytes is below Azure's smallest uploaded disk, %d bytes (20 MiB)", l.size, int64(AzureMinSize)))
	case l.size > AzureMaxSize:
		out = append(out, fmt.Sprintf("virtual size %d bytes is over Azure's largest uploaded disk, %d bytes (32 TiB)", l.size, int64(AzureMaxSize)))
	}
	if l.footerSrc != FooterAtEnd {
		out = append(out, fmt.Sprintf("footer read from the %s: Azure reads a 512-byte footer at the end of the file", l.footerSrc))
	}
	if _, err := parseFooter(l.path, l.footerRaw[:], l.footerOff, false); err != nil {
		out = append(out, strings.TrimPrefix(err.Error(), "vhd: "))
	}
	if l.fixed() {
		if want := l.size + footerSize; l.fileSize != want {
			out = append(out, fmt.Sprintf("file is %d bytes; a fixed VHD of %d bytes must be %d (data, then the footer)", l.fileSize, l.size, want))
		}
		if l.footer.DataOffset != ^uint64(0) {
			out = append(out, fmt.Sprintf("footer DataOffset 0x%x; a fixed disk has 0xFFFFFFFFFFFFFFFF", l.footer.DataOffset))
		}
	}
	if l.footer.SavedState != 0 {
		out = append(out, "footer Saved State is set (the image belongs to a saved virtual machine)")
	}
	return out
}
