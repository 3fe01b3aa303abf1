package format

import (
	"fmt"

	"github.com/vhdmount/vhdmount/format/vhd"
)

// Limits Azure puts on an uploaded disk (a fixed VHD); see format/vhd.
const (
	AzureMinSize  = vhd.AzureMinSize  // smallest disk a managed-disk upload accepts
	AzureMaxSize  = vhd.AzureMaxSize  // largest disk a managed-disk upload accepts
	AzureSizeUnit = vhd.AzureSizeUnit // the virtual size must be a multiple of it
)

// AzureSize returns size rounded up to a whole MiB, or an error when Azure
// would refuse a disk of that size.
func AzureSize(size int64) (int64, error) { return vhd.AzureSize(size) }

// AzureProblems lists every reason Azure would refuse the image as an
// uploaded disk (az disk create --upload-type Upload, or a page blob made
// into a disk): it must be one fixed VHD whose virtual size is a whole
// number of MiB within Azure's limits, with a valid footer at the very end
// of the file right after the data. An empty list means none was found.
func (d *Disk) AzureProblems() []string {
	l, ok := d.layers[0].(*vhd.Layer)
	if !ok {
		return []string{fmt.Sprintf("a %s image: Azure takes a fixed VHD (vhd convert -O fixed --azure)", d.layers[0].Format())}
	}
	return l.AzureProblems()
}
