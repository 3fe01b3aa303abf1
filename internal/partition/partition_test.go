package partition

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/vhdmount/vhdmount/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// needTool returns the path of a partitioning tool, or skips (fails in CI).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	testenv.Require(t, err == nil, name+" not installed (apt-get install fdisk gdisk parted)")
	return p
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sparse makes an empty sparse file of size bytes in a temp dir.
func sparse(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// sfdiskTable is what `sfdisk --json` prints.
type sfdiskTable struct {
	Label      string `json:"label"`
	ID         string `json:"id"`
	Device     string `json:"device"`
	SectorSize int64  `json:"sectorsize"`
	Partitions []struct {
		Node     string `json:"node"`
		Start    int64  `json:"start"`
		Size     int64  `json:"size"`
		Type     string `json:"type"`
		UUID     string `json:"uuid"`
		Name     string `json:"name"`
		Bootable bool   `json:"bootable"`
	} `json:"partitions"`
}

func sfdiskJSON(t *testing.T, dev string) sfdiskTable {
	t.Helper()
	out := run(t, "", "sfdisk", "--json", dev)
	var v struct {
		PT sfdiskTable `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	return v.PT
}

func readFile(t *testing.T, path string) (*Table, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, 2); err != nil {
			t.Fatal(err)
		}
	}
	return Read(f, size)
}

// compareSfdisk checks a table against sfdisk's listing of the same disk:
// scheme, disk id, sector size, and every partition's number, start, size,
// type, GUID, name and boot flag.
func compareSfdisk(t *testing.T, got *Table, want sfdiskTable) {
	t.Helper()
	scheme := map[string]string{"dos": MBR, "gpt": GPT}[want.Label]
	if got.Scheme != scheme || int64(got.SectorSize) != want.SectorSize || !strings.EqualFold(got.DiskID, want.ID) {
		t.Errorf("table: got %s, %d-byte sectors, id %s; sfdisk says %s, %d, %s", got.Scheme, got.SectorSize, got.DiskID, want.Label, want.SectorSize, want.ID)
	}
	if len(got.Partitions) != len(want.Partitions) {
		t.Fatalf("got %d partitions %+v; sfdisk lists %d: %+v", len(got.Partitions), got.Partitions, len(want.Partitions), want.Partitions)
	}
	for i, w := range want.Partitions {
		g := got.Partitions[i]
		num, err := strconv.Atoi(strings.TrimPrefix(strings.TrimPrefix(w.Node, want.Device), "p"))
		if err != nil {
			t.Fatalf("sfdisk node %q: %v", w.Node, err)
		}
		wtype := w.Type
		if scheme == MBR {
			n, err := strconv.ParseUint(w.Type, 16, 8)
			if err != nil {
				t.Fatalf("sfdisk type %q: %v", w.Type, err)
			}
			wtype = fmt.Sprintf("%02x", n)
		}
		ss := want.SectorSize
		if g.Number != num || g.Start != w.Start*ss || g.Size != w.Size*ss || !strings.EqualFold(g.Type, wtype) ||
			!strings.EqualFold(g.GUID, w.UUID) || g.Name != w.Name || g.Bootable != w.Bootable || g.Scheme != scheme {
			t.Errorf("partition %d: got %+v; sfdisk says %+v", i, g, w)
		}
	}
}

// TestMBRBySfdisk: primary, extended and logical partitions made by sfdisk.
func TestMBRBySfdisk(t *testing.T) {
	img := sparse(t, 64<<20)
	run(t, `label: dos
start=2048, size=8192, type=83, bootable
size=8192, type=7
size=4096, type=c
size=60000, type=5
size=4096, type=83
size=4096, type=82
size=8192, type=8e
`, "sfdisk", "-q", img)
	tab, err := readFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	want := sfdiskJSON(t, img)
	compareSfdisk(t, tab, want)
	if len(tab.Partitions) != 7 || tab.Partitions[6].Number != 7 || !tab.Partitions[3].Extended || tab.Partitions[6].TypeName != "Linux LVM" {
		t.Errorf("want 4 primaries (the 4th extended) and logicals 5-7: %+v", tab.Partitions)
	}
	if len(tab.Notes) != 0 {
		t.Errorf("notes on a clean table: %q", tab.Notes)
	}
}

// TestMBRByParted: a table parted made, with a Windows LBA extended
// partition and logicals.
func TestMBRByParted(t *testing.T) {
	img := sparse(t, 64<<20)
	run(t, "", "parted", "-s", img, "mklabel", "msdos",
		"mkpart", "primary", "fat32", "1MiB", "9MiB",
		"mkpart", "extended", "9MiB", "60MiB",
		"mkpart", "logical", "ext4", "10MiB", "20MiB",
		"mkpart", "logical", "linux-swap", "21MiB", "30MiB")
	tab, err := readFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	compareSfdisk(t, tab, sfdiskJSON(t, img))
	if len(tab.Partitions) != 4 || tab.Partitions[3].Number != 6 {
		t.Errorf("want p1, p2 extended, p5, p6: %+v", tab.Partitions)
	}
}

// sgdiskImage makes a GPT with sgdisk: entry 4 left empty, UTF-16 names.
func sgdiskImage(t *testing.T, dev string) {
	run(t, "", "sgdisk",
		"-n", "1:0:+1M", "-t", "1:ef00", "-c", "1:EFI system partition",
		"-n", "2:0:+2M", "-t", "2:0c01",
		"-n", "3:0:+4M", "-t", "3:0700", "-c", "3:Données ü 日本 𝄞",
		"-n", "5:0:+1M", "-t", "5:8300", "-A", "5:set:2",
		"-n", "6:0:+1M", "-t", "6:8200",
		dev)
}

func TestGPTBySgdisk(t *testing.T) {
	img := sparse(t, 64<<20)
	sgdiskImage(t, img)
	tab, err := readFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	compareSfdisk(t, tab, sfdiskJSON(t, img))
	names := []string{"EFI System", "Microsoft reserved", "Microsoft basic data", "Linux filesystem", "Linux swap"}
	for i, p := range tab.Partitions {
		if p.TypeName != names[i] {
			t.Errorf("partition %d: type name %q, want %q", p.Number, p.TypeName, names[i])
		}
	}
	if tab.Partitions[3].Attributes != 1<<2 {
		t.Errorf("p5 attributes %#x, want legacy BIOS bootable (bit 2)", tab.Partitions[3].Attributes)
	}
	if len(tab.Notes) != 0 {
		t.Errorf("notes on a clean table: %q", tab.Notes)
	}
}

func TestGPTByParted(t *testing.T) {
	img := sparse(t, 32<<20)
	run(t, "", "parted", "-s", img, "mklabel", "gpt",
		"mkpart", "boot", "fat32", "1MiB", "5MiB", "set", "1", "esp", "on",
		"mkpart", "rootfs", "ext4", "5MiB", "31MiB")
	tab, err := readFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	compareSfdisk(t, tab, sfdiskJSON(t, img))
}

// TestGPT4096 makes a GPT on a loop device with 4096-byte logical sectors
// (root and loop devices), then reads the backing file.
func TestGPT4096(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "needs root for a loop device")
	img := sparse(t, 64<<20)
	dev := strings.TrimSpace(run(t, "", "losetup", "--show", "-f", "-b", "4096", img))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	sgdiskImage(t, dev)
	want := sfdiskJSON(t, dev)
	if want.SectorSize != 4096 {
		t.Fatalf("sfdisk sees %d-byte sectors on %s", want.SectorSize, dev)
	}
	want.Device = dev
	exec.Command("sync").Run()
	tab, err := readFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	compareSfdisk(t, tab, want)

	// The primary damaged: the backup at the last 4096-byte LBA is used.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("X"), 4096+40)
	f.Close()
	tab, err = readFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	compareSfdisk(t, tab, want)
	if len(tab.Notes) == 0 || !strings.Contains(tab.Notes[0], "backup header at LBA 16383") {
		t.Errorf("notes %q do not say the backup at LBA 16383 was used", tab.Notes)
	}
}

// TestGPTBackupFallback damages the primary header, then the primary entry
// array, of an sgdisk table: the backup is used and the listing is still
// sfdisk's. With both damaged, Read fails naming both.
func TestGPTBackupFallback(t *testing.T) {
	img := sparse(t, 64<<20)
	sgdiskImage(t, img)
	want := sfdiskJSON(t, img)
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	last := int64(len(orig))/512 - 1
	for _, c := range []struct {
		name string
		off  []int64
		note string
	}{
		{"header", []int64{512 + 48}, "header CRC32"},
		{"signature", []int64{512}, "primary GPT is missing"},
		{"entries", []int64{1024 + 200}, "entry array CRC32"},
		{"both", []int64{512 + 48, last*512 + 48}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			for _, o := range c.off {
				b[o] ^= 0xFF
			}
			tab, err := Read(bytes.NewReader(b), int64(len(b)))
			if c.note == "" {
				if err == nil || !strings.Contains(err.Error(), "primary header (LBA 1, offset 512)") || !strings.Contains(err.Error(), fmt.Sprintf("backup header (LBA %d", last)) {
					t.Fatalf("both damaged: err %v, want one naming both headers", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			compareSfdisk(t, tab, want)
			if len(tab.Notes) != 1 || !strings.Contains(tab.Notes[0], c.note) || !strings.Contains(tab.Notes[0], fmt.Sprintf("backup header at LBA %d", last)) {
				t.Errorf("notes %q, want one saying %q and the backup at LBA %d", tab.Notes, c.note, last)
			}
		})
	}
	// A damaged backup with a good primary is read from the primary, with a note.
	b := bytes.Clone(orig)
	b[last*512+48] ^= 0xFF
	tab, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Notes) != 1 || !strings.Contains(tab.Notes[0], "backup GPT header") {
		t.Errorf("notes %q, want one on the backup", tab.Notes)
	}
}

// TestTypeNames checks every name table entry against sfdisk's own list of
// types: same ids and GUIDs (names may be worded differently).
func TestTypeNames(t *testing.T) {
	gpt := strings.ToUpper(run(t, "", "sfdisk", "--label", "gpt", "--list-types"))
	for g := range gptTypeNames {
		if !strings.Contains(gpt, g) {
			t.Errorf("GPT type %s is not in sfdisk's list", g)
		}
	}
	dos := run(t, "", "sfdisk", "--label", "dos", "--list-types")
	for id, name := range mbrTypeNames {
		if !strings.Contains(dos, fmt.Sprintf("%x  %s\n", id, name)) {
			t.Errorf("MBR type %02x %q is not in sfdisk's list", id, name)
		}
	}
}

// A model of MBR and GPT tables written here, for what no tool makes.

// mbrEntry16 encodes one MBR entry.
func mbrEntry16(b []byte, boot, typ byte, start, sectors uint32) {
	b[0], b[4] = boot, typ
	binary.LittleEndian.PutUint32(b[8:], start)
	binary.LittleEndian.PutUint32(b[12:], sectors)
}

// mbrDisk is a disk of n sectors whose sector 0 holds the given entries.
func mbrDisk(n int, entries ...[4]uint32) []byte {
	d := make([]byte, n*512)
	for i, e := range entries {
		mbrEntry16(d[446+16*i:], byte(e[0]), byte(e[1]), e[2], e[3])
	}
	d[510], d[511] = 0x55, 0xAA
	return d
}

// ebr writes an EBR at sector s: a data entry and a link (zero for none).
func ebr(d []byte, s int, data, link [2]uint32) {
	b := d[s*512:]
	if data[1] != 0 {
		mbrEntry16(b[446:], 0, 0x83, data[0], data[1])
	}
	if link[1] != 0 {
		mbrEntry16(b[462:], 0, 0x05, link[0], link[1])
	}
	b[510], b[511] = 0x55, 0xAA
}

func TestEBRChainErrors(t *testing.T) {
	// Extended partition at sectors 100-999.
	self := mbrDisk(1000, [4]uint32{0, 5, 100, 900})
	ebr(self, 100, [2]uint32{1, 10}, [2]uint32{0, 50}) // links to itself
	two := mbrDisk(1000, [4]uint32{0, 5, 100, 900})
	ebr(two, 100, [2]uint32{1, 10}, [2]uint32{100, 50})
	ebr(two, 200, [2]uint32{1, 10}, [2]uint32{0, 50}) // back to the first
	out := mbrDisk(2000, [4]uint32{0, 5, 100, 900})
	ebr(out, 100, [2]uint32{1, 10}, [2]uint32{950, 50}) // sector 1050: outside
	long := mbrDisk(2000, [4]uint32{0, 0x0f, 100, 1800})
	for i := 0; i < 300; i++ {
		ebr(long, 100+5*i, [2]uint32{1, 2}, [2]uint32{uint32(5 * (i + 1)), 5})
	}
	for _, c := range []struct {
		name string
		d    []byte
		want string
	}{
		{"self loop", self, "loops back to sector 100"},
		{"two-EBR loop", two, "loops back to sector 100"},
		{"outside", out, "points to sector 1050, outside the extended partition"},
		{"too long", long, "longer than 256"},
	} {
		if _, err := Read(bytes.NewReader(c.d), int64(len(c.d))); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}

	// An EBR without signature ends the chain with a note.
	d := mbrDisk(1000, [4]uint32{0, 5, 100, 900})
	ebr(d, 100, [2]uint32{1, 10}, [2]uint32{100, 50})
	tab, err := Read(bytes.NewReader(d), int64(len(d)))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 2 || tab.Partitions[1].Number != 5 || tab.Partitions[1].Start != 101*512 || tab.Partitions[1].Size != 10*512 ||
		len(tab.Notes) != 1 || !strings.Contains(tab.Notes[0], "sector 200") {
		t.Errorf("got %+v, notes %q; want p2 and p5 at sector 101, a note on sector 200", tab.Partitions, tab.Notes)
	}
}

func TestNoTableAndBounds(t *testing.T) {
	noSig := make([]byte, 4096)
	fat := mbrDisk(8, [4]uint32{0, 0x83, 1, 4})
	fat[446] = 0x33 // boot indicator of a boot sector's code, not 0 or 0x80
	for name, d := range map[string][]byte{"no signature": noSig, "boot sector": fat, "empty": mbrDisk(8), "tiny": {1, 2}} {
		if _, err := Read(bytes.NewReader(d), int64(len(d))); !errors.Is(err, ErrNoTable) {
			t.Errorf("%s: err %v, want ErrNoTable", name, err)
		}
	}
	// p1 inside, p2 clipped at the end, p3 past the end (ignored), p4 at the
	// largest 32-bit numbers (ignored).
	d := mbrDisk(100, [4]uint32{0x80, 0x83, 1, 10}, [4]uint32{0, 0x07, 50, 80}, [4]uint32{0, 0x83, 100, 1}, [4]uint32{0, 0x83, ^uint32(0), ^uint32(0)})
	tab, err := Read(bytes.NewReader(d), int64(len(d)))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 2 || tab.Partitions[1].Size != 50*512 || !tab.Partitions[1].Clipped || len(tab.Notes) != 3 {
		t.Errorf("got %+v, notes %q", tab.Partitions, tab.Notes)
	}
	// A read error is an error, not "no table".
	if _, err := Read(bytes.NewReader(d[:100]), int64(len(d))); err == nil || errors.Is(err, ErrNoTable) {
		t.Errorf("short reader: err %v", err)
	}
}

// gptDisk builds a disk of n sectors of ss bytes with a protective MBR and
// primary and backup GPTs (128 entries of 128 bytes) holding parts.
type gptPart struct {
	first, last uint64
	name        string
}

var linuxFS = []byte{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4}

func gptDisk(n uint64, ss int, parts ...gptPart) []byte {
	d := make([]byte, n*uint64(ss))
	mbrEntry16(d[446:], 0, 0xEE, 1, uint32(min(n-1, 0xFFFFFFFF)))
	d[510], d[511] = 0x55, 0xAA
	arr := make([]byte, 128*128)
	for i, p := range parts {
		e := arr[i*128:]
		copy(e, linuxFS)
		e[16] = byte(i + 1)
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		for j, u := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	arrSectors := uint64(len(arr) / ss)
	put := func(my, alt, entries uint64) {
		h := d[my*uint64(ss):]
		copy(h, "EFI PART")
		le := binary.LittleEndian
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], my)
		le.PutUint64(h[32:], alt)
		le.PutUint64(h[40:], 2+arrSectors)
		le.PutUint64(h[48:], n-2-arrSectors)
		le.PutUint64(h[72:], entries)
		le.PutUint32(h[80:], 128)
		le.PutUint32(h[84:], 128)
		le.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		copy(d[entries*uint64(ss):], arr)
	}
	put(n-1, 1, n-1-arrSectors)
	put(1, n-1, 2)
	return d
}

func TestGPTModel(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		// Entry 3 runs past the end (clipped), entry 4 starts past it
		// (ignored), entry 5 ends before it starts (ignored).
		n := uint64(200)
		d := gptDisk(n, ss, gptPart{40, 59, "α"}, gptPart{60, 60, ""}, gptPart{100, 1 << 62, "big"}, gptPart{300, 400, ""}, gptPart{80, 70, ""})
		tab, err := Read(bytes.NewReader(d), int64(len(d)))
		if err != nil {
			t.Fatalf("%d: %v", ss, err)
		}
		s := int64(ss)
		want := []Partition{
			{Number: 1, Start: 40 * s, Size: 20 * s, Name: "α"},
			{Number: 2, Start: 60 * s, Size: s},
			{Number: 3, Start: 100 * s, Size: 100 * s, Name: "big", Clipped: true},
		}
		if tab.SectorSize != ss || len(tab.Partitions) != len(want) || len(tab.Notes) != 3 {
			t.Fatalf("%d: got %d-byte sectors, %+v, notes %q", ss, tab.SectorSize, tab.Partitions, tab.Notes)
		}
		for i, w := range want {
			g := tab.Partitions[i]
			if g.Number != w.Number || g.Start != w.Start || g.Size != w.Size || g.Name != w.Name || g.Clipped != w.Clipped ||
				g.Type != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" || g.TypeName != "Linux filesystem" {
				t.Errorf("%d: partition %d: got %+v, want %+v", ss, i, g, w)
			}
		}
	}
	// A protective MBR without a GPT is an error, not "no table".
	d := mbrDisk(100, [4]uint32{0, 0xEE, 1, 99})
	if _, err := Read(bytes.NewReader(d), int64(len(d))); err == nil || errors.Is(err, ErrNoTable) || !strings.Contains(err.Error(), "EFI PART") {
		t.Errorf("protective MBR alone: err %v", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add(gptDisk(80, 512, gptPart{34, 40, "a"}, gptPart{41, 45, ""}))
	d := mbrDisk(60, [4]uint32{0x80, 0x83, 1, 10}, [4]uint32{0, 5, 20, 40})
	ebr(d, 20, [2]uint32{1, 5}, [2]uint32{10, 10})
	ebr(d, 30, [2]uint32{1, 5}, [2]uint32{0, 10})
	f.Add(d)
	f.Add(mbrDisk(4))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > int64(len(b)) || p.Start%int64(tab.SectorSize) != 0 {
				t.Fatalf("partition %+v outside a disk of %d bytes", p, len(b))
			}
		}
	})
}

// TestTinyProtective: a protective MBR on a disk too small for a GPT of
// 4096-byte sectors names no impossible LBA.
func TestTinyProtective(t *testing.T) {
	d := mbrDisk(4, [4]uint32{0, 0xEE, 1, 3})
	_, err := Read(bytes.NewReader(d), int64(len(d)))
	if err == nil || strings.Contains(err.Error(), "18446744073709551615") || strings.Contains(err.Error(), "offset -") {
		t.Errorf("err %v", err)
	}
}

// FuzzGPT fuzzes the fields of a primary GPT header and its entries with
// both CRC32s made valid, so the bounds checks behind them are reached.
func FuzzGPT(f *testing.F) {
	const n = 80
	base := gptDisk(n, 512, gptPart{34, 40, "a"}, gptPart{41, 45, ""})
	f.Add(bytes.Clone(base[512+12:512+92]), bytes.Clone(base[1024:1024+256]))
	f.Fuzz(func(t *testing.T, hdr, ents []byte) {
		d := bytes.Clone(base)
		h := d[512:1024]
		copy(h[12:92], hdr)
		copy(d[1024:1024+16384], ents)
		le := binary.LittleEndian
		// Make the array CRC match whatever array the header names, when
		// it fits the disk.
		lba, num, size := le.Uint64(h[72:]), uint64(le.Uint32(h[80:])), uint64(le.Uint32(h[84:]))
		if lba < n && num*size <= uint64(len(d)) && lba*512+num*size <= uint64(len(d)) {
			le.PutUint32(h[88:], crc32.ChecksumIEEE(d[lba*512:lba*512+num*size]))
		}
		hs := le.Uint32(h[12:])
		if hs < 92 || hs > 512 {
			hs = 92
		}
		clear(h[16:20])
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
		tab, err := Read(bytes.NewReader(d), int64(len(d)))
		if err != nil {
			return
		}
		for _, p := range tab.Partitions {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > int64(len(d)) {
				t.Fatalf("partition %+v outside a disk of %d bytes", p, len(d))
			}
		}
	})
}
