package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

type infoPartitions struct {
	Table      string `json:"partition_table"`
	SectorSize int    `json:"partition_sector_size"`
	DiskID     string `json:"partition_disk_id"`
	Partitions []struct {
		Number     int    `json:"number"`
		Scheme     string `json:"scheme"`
		Type       string `json:"type"`
		TypeName   string `json:"type_name"`
		Start      int64  `json:"start"`
		Size       int64  `json:"size"`
		Name       string `json:"name"`
		GUID       string `json:"guid"`
		Attributes string `json:"attributes"`
		Bootable   bool   `json:"bootable"`
		Extended   bool   `json:"extended"`
	} `json:"partitions"`
	Error string `json:"partition_error"`
}

func infoJSON(t *testing.T, img string) (infoPartitions, string) {
	t.Helper()
	code, out, errs := runVHD("info", "--json", img)
	if code != 0 {
		t.Fatalf("vhd info --json %s: exit %d: %s", img, code, errs)
	}
	var v infoPartitions
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	return v, out
}

// TestInfoPartitionsCorpus: the GPT of a corpus disk (values as sfdisk
// lists them, see internal/partition's TestCorpus), in text and JSON.
func TestInfoPartitionsCorpus(t *testing.T) {
	img := testenv.Unpack(t, testenv.CorpusDir(t), "real/node-vhd/dynamic.vhd.gz")
	v, _ := infoJSON(t, img)
	if v.Table != "gpt" || v.SectorSize != 512 || v.DiskID != "9DACC91E-F01C-4276-80C2-1AE8FC0F8641" || len(v.Partitions) != 4 || v.Error != "" {
		t.Fatalf("got %+v", v)
	}
	p := v.Partitions[0]
	if p.Number != 1 || p.Scheme != "gpt" || p.Type != "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" || p.TypeName != "Microsoft reserved" ||
		p.Start != 17408 || p.Size != 33554432 || p.Name != "Microsoft reserved partition" {
		t.Errorf("p1: %+v", p)
	}
	p = v.Partitions[3]
	if p.Number != 4 || p.TypeName != "Microsoft basic data" || p.Start != 336658432 || p.Size != 198180864 ||
		p.GUID != "91C69CC5-B579-499E-B2AC-30ED3B8496C7" || p.Attributes != "0x8000000000000000" {
		t.Errorf("p4: %+v", p)
	}
	code, out, _ := runVHD("info", img)
	for _, w := range []string{
		"\npartition table: gpt, 512-byte sectors, disk id 9DACC91E-F01C-4276-80C2-1AE8FC0F8641\n",
		"  p1   start 17408, size 33554432 (32.0 MiB), type Microsoft reserved (E3C9E316-0B5C-4DB8-817D-F92DF00215AE), name \"Microsoft reserved partition\"\n",
		"  p4   start 336658432, size 198180864 (189.0 MiB), type Microsoft basic data (EBD0A0A2-B9E5-4433-87C0-68B6B72699C7), name \"Basic data partition\"\n",
	} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("vhd info lacks %q:\n%s", w, out)
		}
	}
}

// TestInfoPartitionsMade: an MBR made by sfdisk, a disk without a table and
// a protective MBR without a GPT, each converted to a VHD.
func TestInfoPartitionsMade(t *testing.T) {
	sfdisk, err := exec.LookPath("sfdisk")
	testenv.Require(t, err == nil, "sfdisk not installed (apt-get install fdisk)")
	dir := t.TempDir()
	toVHD := func(name string, prep func(raw string)) string {
		raw := filepath.Join(dir, name+".raw")
		if err := os.WriteFile(raw, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(raw, 16<<20); err != nil {
			t.Fatal(err)
		}
		prep(raw)
		img := filepath.Join(dir, name+".vhd")
		if code, _, errs := runVHD("convert", "-O", "dynamic", "-f", "raw", raw, img); code != 0 {
			t.Fatalf("convert: %s", errs)
		}
		return img
	}
	mbr := toVHD("mbr", func(raw string) {
		cmd := exec.Command(sfdisk, "-q", raw)
		cmd.Stdin = strings.NewReader("label: dos\nlabel-id: 0x12345678\nstart=2048, size=4096, type=83, bootable\nsize=2048, type=c\nsize=2048, type=82\nsize=8192, type=5\nsize=2048, type=7\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
	})
	v, _ := infoJSON(t, mbr)
	if v.Table != "mbr" || v.DiskID != "0x12345678" || len(v.Partitions) != 5 ||
		!v.Partitions[0].Bootable || v.Partitions[0].Type != "83" || v.Partitions[0].Start != 2048*512 || v.Partitions[0].Size != 4096*512 ||
		!v.Partitions[3].Extended || v.Partitions[4].Number != 5 || v.Partitions[4].TypeName != "HPFS/NTFS/exFAT" || v.Partitions[4].Start != (10240+2048)*512 {
		t.Errorf("mbr: %+v", v)
	}
	_, out, _ := runVHD("info", mbr)
	if !strings.Contains(out, "  p1   start 1048576, size 2097152 (2.0 MiB), type Linux (0x83) [bootable]\n") ||
		!strings.Contains(out, "  p5   start 6291456, size 1048576 (1.0 MiB), type HPFS/NTFS/exFAT (0x07)\n") {
		t.Errorf("mbr text:\n%s", out)
	}

	blank := toVHD("blank", func(string) {})
	v, js := infoJSON(t, blank)
	if strings.Contains(js, "partition") {
		t.Errorf("a disk without a table has partition keys:\n%s", js)
	}
	if _, out, _ := runVHD("info", blank); strings.Contains(out, "partition") {
		t.Errorf("a disk without a table lists partitions:\n%s", out)
	}

	broken := toVHD("broken", func(raw string) {
		b := make([]byte, 512)
		b[446+4], b[446+8], b[446+12], b[446+13] = 0xEE, 1, 0xFF, 0x7F
		b[510], b[511] = 0x55, 0xAA
		if err := os.WriteFile(raw, b, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(raw, 16<<20)
	})
	v, js = infoJSON(t, broken)
	if !strings.Contains(v.Error, "EFI PART") || len(v.Partitions) != 0 || strings.Contains(js, `"partitions"`) {
		t.Errorf("protective MBR alone: %+v", v)
	}
	if code, out, _ := runVHD("info", broken); code != 0 || !strings.Contains(out, "\npartition table: unreadable: partition: gpt: protective MBR but no \"EFI PART\"") {
		t.Errorf("protective MBR alone: exit %d\n%s", code, out)
	}
}
