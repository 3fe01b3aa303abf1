package format

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

// qemuDynamicVHDX makes a dynamic VHDX of size bytes (1 MiB blocks) at path
// with qemu-img, an independent writer.
func qemuDynamicVHDX(t *testing.T, path string, size int64) {
	t.Helper()
	_, err := exec.LookPath("qemu-img")
	testenv.Require(t, err == nil, "qemu-img is not installed (qemu-utils)")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", path, strconv.FormatInt(size, 10)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
}

// qemuReadsAs converts the VHDX at path to raw with qemu-img and fails
// unless that is model.
func qemuReadsAs(t *testing.T, path string, model []byte) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "qemu.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "vhdx", "-O", "raw", path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(raw); !bytes.Equal(b, model) {
		t.Fatalf("qemu-img reads %s differently from the model", path)
	}
}

// openWritable opens path read-write and fails if it came up read-only.
func openWritable(t *testing.T, path string) *Disk {
	t.Helper()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.ReadOnly() {
		d.Close()
		t.Fatalf("%s opened read-only", path)
	}
	return d
}

// readsAsModel opens path read-only and fails unless it checks clean and
// reads as model.
func readsAsModel(t *testing.T, path string, model []byte) {
	t.Helper()
	d, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if ps := d.Check(); len(ps) > 0 {
		t.Fatalf("check %s: %v", path, ps)
	}
	got := make([]byte, len(model))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatalf("%s does not read as the model", path)
	}
}
