package vhdx_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/vhdmount/vhdmount/format/vhdx"
	"github.com/vhdmount/vhdmount/internal/testenv"
)

// The structure checks below parse created files by hand with the
// constants of [MS-VHDX] written here, not with the package's encoder or
// reader, and compare the metadata items with a file Hyper-V wrote.

// GUIDs of [MS-VHDX] in their on-disk byte order.
var (
	specBAT       = unhexT("6677c22d23f600429d64115e9bfd4a08")
	specMetadata  = unhexT("06a27c8b90479a4bb8fe575f050f886e")
	specFileParam = unhexT("3767a1ca36fa434db3b633f0aa44e76b")
	specVDSize    = unhexT("2442a52f1bcd7648b2115dbed83bf4b8")
	specPage83    = unhexT("ab12cabee6b2234593efc309e000c746")
	specLSS       = unhexT("1dbf41816fa90947ba47f233a8faab5f")
	specPSS       = unhexT("c748a3cd5d447144 9cc9e9885251c556")
	specLocator   = unhexT("2d5fd3a80bb34d45abf7d3d84834ab0c")
	specLocType   = unhexT("b7ef4ab09ed1814ab78925b8e9445913")
)

func unhexT(s string) string {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return string(b)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crcValid(b []byte, at int) bool {
	c := append([]byte(nil), b...)
	stored := binary.LittleEndian.Uint32(c[at:])
	binary.LittleEndian.PutUint32(c[at:], 0)
	return crc32.Checksum(c, castagnoli) == stored
}

type parsedItem struct {
	id    string
	flags uint32
	data  []byte
}

type parsedFile struct {
	size      int64
	creator   string
	headers   [2][]byte
	regions   map[string][2]int64 // GUID bytes → offset, length
	items     []parsedItem
	dataWrite []byte // current header's DataWriteGuid
	optional  int    // regions without Required set
	f         *os.File
}

func (p *parsedFile) item(id string) []byte {
	for _, it := range p.items {
		if it.id == id {
			return it.data
		}
	}
	return nil
}

func parseByHand(t *testing.T, path string) *parsedFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	p := &parsedFile{size: fi.Size(), regions: map[string][2]int64{}, f: f}
	rd := func(off, n int64) []byte {
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatalf("%s: reading %d bytes at 0x%x: %v", path, n, off, err)
		}
		return b
	}
	id := rd(0, 64<<10)
	if string(id[:8]) != "vhdxfile" {
		t.Fatalf("%s: signature %q", path, id[:8])
	}
	u := make([]uint16, 0, 256)
	for i := 8; i < 520; i += 2 {
		c := binary.LittleEndian.Uint16(id[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	p.creator = string(utf16.Decode(u))
	var best uint64
	for i, off := range []int64{64 << 10, 128 << 10} {
		h := rd(off, 4096)
		if string(h[:4]) != "head" || !crcValid(h, 4) {
			t.Fatalf("%s: header %d: signature %q or CRC-32C invalid", path, i+1, h[:4])
		}
		p.headers[i] = h
		if s := binary.LittleEndian.Uint64(h[8:]); s >= best {
			best, p.dataWrite = s, h[32:48]
		}
	}
	rt := rd(192<<10, 64<<10)
	if rt2 := rd(256<<10, 64<<10); !bytes.Equal(rt, rt2) {
		t.Errorf("%s: the two region tables differ", path)
	}
	if string(rt[:4]) != "regi" || !crcValid(rt, 4) {
		t.Fatalf("%s: region table: signature %q or CRC-32C invalid", path, rt[:4])
	}
	for i := 0; i < int(binary.LittleEndian.Uint32(rt[8:])); i++ {
		e := rt[16+32*i:]
		if binary.LittleEndian.Uint32(e[28:]) != 1 {
			p.optional++
		}
		p.regions[string(e[:16])] = [2]int64{int64(binary.LittleEndian.Uint64(e[16:])), int64(binary.LittleEndian.Uint32(e[24:]))}
	}
	m, ok := p.regions[specMetadata]
	if !ok {
		t.Fatalf("%s: no metadata region", path)
	}
	mt := rd(m[0], 64<<10)
	if string(mt[:8]) != "metadata" {
		t.Fatalf("%s: metadata signature %q", path, mt[:8])
	}
	for i := 0; i < int(binary.LittleEndian.Uint16(mt[10:])); i++ {
		e := mt[32+32*i:]
		off, n := binary.LittleEndian.Uint32(e[16:]), binary.LittleEndian.Uint32(e[20:])
		p.items = append(p.items, parsedItem{string(e[:16]), binary.LittleEndian.Uint32(e[24:]), rd(m[0]+int64(off), int64(n))})
	}
	return p
}

func locatorByHand(t *testing.T, b []byte) (map[string]string, []string) {
	t.Helper()
	if len(b) < 20 || string(b[:16]) != specLocType {
		t.Fatalf("parent locator type % x", b[:min(16, len(b))])
	}
	kv := map[string]string{}
	var keys []string
	str := func(off uint32, n uint16) string {
		u := make([]uint16, n/2)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(b[int(off)+2*i:])
		}
		return string(utf16.Decode(u))
	}
	for i := 0; i < int(binary.LittleEndian.Uint16(b[18:])); i++ {
		e := b[20+12*i:]
		k := str(binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint16(e[8:]))
		kv[k] = str(binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint16(e[10:]))
		keys = append(keys, k)
	}
	return kv, keys
}

// guidText formats on-disk GUID bytes as lower-case text in braces.
func guidText(g []byte) string {
	return fmt.Sprintf("{%08x-%04x-%04x-%x-%x}", binary.LittleEndian.Uint32(g), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

// hyperVItems returns the (id, flags) list of a corpus image Windows wrote.
func hyperVItems(t *testing.T, rel string) []parsedItem {
	t.Helper()
	corpus := testenv.CorpusDir(t)
	p := parseByHand(t, testenv.Unpack(t, corpus, rel))
	if !strings.HasPrefix(p.creator, "Microsoft Windows") {
		t.Fatalf("%s: creator %q, not Windows", rel, p.creator)
	}
	return p.items
}

func sameItems(t *testing.T, name string, got, want []parsedItem) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d metadata items, Hyper-V writes %d", name, len(got), len(want))
	}
	for i := range got {
		if got[i].id != want[i].id || got[i].flags != want[i].flags {
			t.Errorf("%s: metadata item %d is %x flags %#x; Hyper-V writes %x flags %#x", name, i, got[i].id, got[i].flags, want[i].id, want[i].flags)
		}
	}
}

// checkCreated checks a created file against the spec: headers (sequence
// numbers 1 and 2, version 1, log 1 MiB at 1 MiB, no log GUID, identical
// write GUIDs), regions (metadata at 2 MiB, BAT at 3 MiB sized by the
// spec's formula), metadata values, the BAT, and the file size.
func checkCreated(t *testing.T, path string, size, bs int64, lss, pss uint32, fixed, child bool) *parsedFile {
	t.Helper()
	p := parseByHand(t, path)
	if !strings.HasPrefix(p.creator, "vhdmount ") {
		t.Errorf("creator %q", p.creator)
	}
	for i, h := range p.headers {
		if s := binary.LittleEndian.Uint64(h[8:]); s != uint64(i+1) {
			t.Errorf("header %d: sequence number %d", i+1, s)
		}
		if !bytes.Equal(h[48:64], make([]byte, 16)) || binary.LittleEndian.Uint16(h[64:]) != 0 || binary.LittleEndian.Uint16(h[66:]) != 1 ||
			binary.LittleEndian.Uint32(h[68:]) != 1<<20 || binary.LittleEndian.Uint64(h[72:]) != 1<<20 {
			t.Errorf("header %d: log GUID % x, log version, version, log length, offset: % x", i+1, h[48:64], h[64:80])
		}
		if bytes.Equal(h[16:32], make([]byte, 16)) || bytes.Equal(h[32:48], make([]byte, 16)) || !bytes.Equal(h[16:48], p.headers[0][16:48]) {
			t.Errorf("header %d: write GUIDs % x", i+1, h[16:48])
		}
	}
	ratio := int64(1<<23) * int64(lss) / bs
	nb := (size + bs - 1) / bs
	entries := nb + (nb-1)/ratio
	if child {
		entries = ((nb-1)/ratio + 1) * (ratio + 1)
	}
	batLen := (entries*8 + 1<<20 - 1) >> 20 << 20
	if r := p.regions[specMetadata]; r != [2]int64{2 << 20, 1 << 20} {
		t.Errorf("metadata region %v", r)
	}
	if p.optional != 0 {
		t.Errorf("%d regions without Required set", p.optional)
	}
	if r := p.regions[specBAT]; r != [2]int64{3 << 20, batLen} || len(p.regions) != 2 {
		t.Errorf("BAT region %v, want 3 MiB + %d; %d regions", r, batLen, len(p.regions))
	}
	fp := p.item(specFileParam)
	var flags uint32
	if fixed {
		flags = 1
	}
	if child {
		flags = 2
	}
	if len(fp) != 8 || int64(binary.LittleEndian.Uint32(fp)) != bs || binary.LittleEndian.Uint32(fp[4:]) != flags {
		t.Errorf("file parameters % x; want block size %d flags %d", fp, bs, flags)
	}
	if v := p.item(specVDSize); len(v) != 8 || int64(binary.LittleEndian.Uint64(v)) != size {
		t.Errorf("virtual disk size % x; want %d", v, size)
	}
	if v := p.item(specLSS); len(v) != 4 || binary.LittleEndian.Uint32(v) != lss {
		t.Errorf("logical sector size % x", v)
	}
	if v := p.item(specPSS); len(v) != 4 || binary.LittleEndian.Uint32(v) != pss {
		t.Errorf("physical sector size % x", v)
	}
	if v := p.item(specPage83); len(v) != 16 || bytes.Equal(v, make([]byte, 16)) {
		t.Errorf("page 83 data % x", v)
	}
	payload := int64(3<<20) + batLen
	if child {
		payload += ((nb-1)/ratio + 1) << 20 // a sector bitmap block per chunk, allocated
	}
	bat := make([]byte, entries*8)
	if _, err := p.f.ReadAt(bat, 3<<20); err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < entries; i++ {
		e := binary.LittleEndian.Uint64(bat[8*i:])
		want := uint64(0)
		if child && i%(ratio+1) == ratio {
			want = uint64(3<<20+batLen+i/(ratio+1)<<20) | 6
		}
		if fixed && i%(ratio+1) != ratio {
			b := i - i/(ratio+1)
			want = uint64(payload+b*bs) | 6
		}
		if e != want {
			t.Fatalf("BAT entry %d: %#x, want %#x", i, e, want)
		}
	}
	wantSize := payload
	if fixed {
		wantSize += nb * bs
	}
	if p.size != wantSize {
		t.Errorf("file size %d, want %d", p.size, wantSize)
	}
	return p
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	b, err := exec.Command(needTool(t, "qemu-img"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v: %s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// randomRaw writes a raw disk of size bytes: random data with zero holes.
func randomRaw(t *testing.T, path string, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	for off := int64(0); off < size; off += 5 << 20 {
		clear(b[off:min(size, off+(3<<20)+4096)])
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// ours reads the flat disk through this package's reader (with parents).
func ours(t *testing.T, path string) string {
	t.Helper()
	ch, err := openChain(path, openFile)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	s, err := ch.sha256()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sevenZip(t *testing.T, path string) string {
	t.Helper()
	sz := needTool(t, "7zz")
	out := filepath.Join(t.TempDir(), "7z.raw")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sz, "e", "-tvhdx", "-so", filepath.Base(path))
	cmd.Dir, cmd.Stdout = filepath.Dir(path), f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	f.Close()
	if err != nil {
		t.Fatalf("7zz e %s: %v: %s", path, err, stderr.String())
	}
	return sumFile(t, out)
}

// libvhdi reads the image through vhdimount; depth is the chain's length.
func libvhdi(t *testing.T, path string, depth int) string {
	t.Helper()
	vm := needTool(t, "vhdimount")
	fm := needTool(t, "fusermount")
	_, err := os.Stat("/dev/fuse")
	testenv.Require(t, err == nil, "no /dev/fuse")
	mnt := t.TempDir()
	if b, err := exec.Command(vm, path, mnt).CombinedOutput(); err != nil {
		t.Fatalf("vhdimount %s: %v: %s", path, err, b)
	}
	defer func() {
		for i := 0; i < 50; i++ {
			if exec.Command(fm, "-u", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("could not unmount %s", mnt)
	}()
	return sumFile(t, filepath.Join(mnt, fmt.Sprintf("vhdi%d", depth)))
}

func TestCreateFixedDynamic(t *testing.T) {
	want512 := hyperVItems(t, "real/dissect-hypervisor/fixed.vhdx.gz")
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		o      vhdx.CreateOptions
		bs     int64
		lss    uint32
		qemu   bool // qemu 7.2 refuses 4096-byte sectors
		sevenz bool // 7-Zip refuses sizes with an odd number of 512-byte sectors
	}{
		{"dyn.vhdx", vhdx.CreateOptions{Size: 100<<20 + 4096}, 32 << 20, 512, true, true},
		{"dyn-1M.vhdx", vhdx.CreateOptions{Size: 300<<20 + 1024, BlockSize: 1 << 20}, 1 << 20, 512, true, true},
		{"fixed.vhdx", vhdx.CreateOptions{Size: 70 << 20, Fixed: true}, 32 << 20, 512, true, true},
		{"fixed-1M.vhdx", vhdx.CreateOptions{Size: 5<<20 + 512, Fixed: true, BlockSize: 1 << 20}, 1 << 20, 512, true, false},
		{"dyn-4k.vhdx", vhdx.CreateOptions{Size: 40 << 20, SectorSize: 4096, BlockSize: 2 << 20}, 2 << 20, 4096, false, true},
		{"fixed-4k.vhdx", vhdx.CreateOptions{Size: 40 << 20, SectorSize: 4096, Fixed: true}, 32 << 20, 4096, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name)
			if err := vhdx.Create(path, c.o); err != nil {
				t.Fatal(err)
			}
			p := checkCreated(t, path, c.o.Size, c.bs, c.lss, 4096, c.o.Fixed, false)
			sameItems(t, c.name, p.items, want512)
			zero := sha(make([]byte, c.o.Size))
			if got := ours(t, path); got != zero {
				t.Errorf("we read %s, not zeros", got)
			}
			if c.qemu {
				info := qemuImg(t, "info", "--output=json", path)
				if !strings.Contains(info, `"format": "vhdx"`) || !strings.Contains(info, fmt.Sprintf(`"virtual-size": %d,`, c.o.Size)) {
					t.Errorf("qemu-img info: %s", info)
				}
				qemuImg(t, "check", "-f", "vhdx", path)
				out := filepath.Join(t.TempDir(), "q.raw")
				qemuImg(t, "convert", "-f", "vhdx", "-O", "raw", path, out)
				if got := sumFile(t, out); got != zero {
					t.Errorf("qemu-img reads %s, not zeros", got)
				}
			}
			if c.sevenz {
				if got := sevenZip(t, path); got != zero {
					t.Errorf("7-Zip reads %s, not zeros", got)
				}
			}
			if got := libvhdi(t, path, 1); got != zero {
				t.Errorf("libvhdi reads %s, not zeros", got)
			}
		})
	}
}

func TestCreateDifferencing(t *testing.T) {
	wantItems := hyperVItems(t, "real/dissect-hypervisor/differencing.avhdx.gz")
	dir := t.TempDir()
	raw := filepath.Join(dir, "base.raw")
	content := randomRaw(t, raw, 64<<20)
	// The parent is written by qemu-img (4 MiB blocks). The child lies
	// beside it (7-Zip 26 passes `\` paths unchanged on Linux, so it can
	// follow only `.\name`); a grandchild in another directory then has a
	// relative_path that climbs out of its own.
	parent := filepath.Join(dir, "base.vhdx")
	qemuImg(t, "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic,block_size=4194304", raw, parent)
	child := filepath.Join(dir, "child.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	pp := parseByHand(t, parent)
	p := checkCreated(t, child, 64<<20, 4<<20, 512, binary.LittleEndian.Uint32(pp.item(specPSS)), false, true)
	sameItems(t, "child", p.items, wantItems)
	kv, keys := locatorByHand(t, p.item(specLocator))
	if want := []string{"parent_linkage", "relative_path", "absolute_win32_path"}; strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("locator keys %v, want %v", keys, want)
	}
	if kv["parent_linkage"] != guidText(pp.dataWrite) {
		t.Errorf("parent_linkage %s; the parent's DataWriteGuid is %s", kv["parent_linkage"], guidText(pp.dataWrite))
	}
	if kv["relative_path"] != `.\base.vhdx` {
		t.Errorf("relative_path %q", kv["relative_path"])
	}
	if kv["absolute_win32_path"] != strings.ReplaceAll(parent, "/", `\`) {
		t.Errorf("absolute_win32_path %q", kv["absolute_win32_path"])
	}
	want := sha(content)
	if got := ours(t, child); got != want {
		t.Errorf("we read %s through the child, the parent's content is %s", got, want)
	}
	if got := sevenZip(t, child); got != want {
		t.Errorf("7-Zip reads %s through the child, the parent's content is %s", got, want)
	}
	if got := libvhdi(t, child, 2); got != want {
		t.Errorf("libvhdi reads %s through the child, the parent's content is %s", got, want)
	}
	// A grandchild over the child, in another directory, links to the
	// child's DataWriteGuid.
	if err := os.Mkdir(filepath.Join(dir, "more kids"), 0o755); err != nil {
		t.Fatal(err)
	}
	gc := filepath.Join(dir, "more kids", "gc.avhdx")
	if err := vhdx.Create(gc, vhdx.CreateOptions{Parent: child, BlockSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	g := checkCreated(t, gc, 64<<20, 1<<20, 512, binary.LittleEndian.Uint32(pp.item(specPSS)), false, true)
	if kv, _ := locatorByHand(t, g.item(specLocator)); kv["parent_linkage"] != guidText(p.dataWrite) || kv["relative_path"] != `..\child.avhdx` {
		t.Errorf("grandchild locator %v", kv)
	}
	if got := ours(t, gc); got != want {
		t.Errorf("we read %s through the grandchild", got)
	}
}

// A child of a Hyper-V file from the corpus: Windows' DataWriteGuid, sector
// sizes and block size are taken over.
func TestCreateOverHyperV(t *testing.T) {
	corpus := testenv.CorpusDir(t)
	dir := t.TempDir()
	parent := filepath.Join(dir, "hv.vhdx")
	b, err := os.ReadFile(testenv.Unpack(t, corpus, "real/dissect-hypervisor/dynamic.vhdx.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(parent, b, 0o644); err != nil {
		t.Fatal(err)
	}
	pp := parseByHand(t, parent)
	child := filepath.Join(dir, "c.avhdx")
	if err := vhdx.Create(child, vhdx.CreateOptions{Parent: parent}); err != nil {
		t.Fatal(err)
	}
	p := checkCreated(t, child, 10<<20, 32<<20, 512, 4096, false, true)
	if kv, _ := locatorByHand(t, p.item(specLocator)); kv["parent_linkage"] != guidText(pp.dataWrite) {
		t.Errorf("parent_linkage %s, the parent's DataWriteGuid %s", kv["parent_linkage"], guidText(pp.dataWrite))
	}
	if got, want := ours(t, child), ours(t, parent); got != want {
		t.Errorf("we read %s through the child, %s in the parent", got, want)
	}
	if got, want := sevenZip(t, child), ours(t, parent); got != want {
		t.Errorf("7-Zip reads %s through the child, we %s in the parent", got, want)
	}
	if got, want := libvhdi(t, child, 2), sevenZip(t, parent); got != want {
		t.Errorf("libvhdi reads %s through the child, 7-Zip %s in the parent", got, want)
	}
}

func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	exist := filepath.Join(dir, "exists.vhdx")
	os.WriteFile(exist, []byte("keep"), 0o644)
	link := filepath.Join(dir, "dangling.vhdx")
	os.Symlink(filepath.Join(dir, "nowhere"), link)
	vhdParent := filepath.Join(dir, "p.vhd")
	qemuImg(t, "create", "-f", "vpc", "-o", "subformat=dynamic", vhdParent, "10M")
	p4k := filepath.Join(dir, "p4k.vhdx")
	if err := vhdx.Create(p4k, vhdx.CreateOptions{Size: 8 << 20, SectorSize: 4096}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		o    vhdx.CreateOptions
		want string
	}{
		{exist, vhdx.CreateOptions{Size: 1 << 20}, "exists"},
		{link, vhdx.CreateOptions{Size: 1 << 20}, "exists"},
		{filepath.Join(dir, "c1.avhdx"), vhdx.CreateOptions{Parent: vhdParent}, "is a VHD"},
		{filepath.Join(dir, "c2.avhdx"), vhdx.CreateOptions{Parent: p4k, SectorSize: 512}, "same"},
		{filepath.Join(dir, "c3.avhdx"), vhdx.CreateOptions{Parent: p4k, Fixed: true}, "cannot be fixed"},
		{filepath.Join(dir, "s.vhdx"), vhdx.CreateOptions{Size: 1000}, "multiple"},
		{filepath.Join(dir, "s.vhdx"), vhdx.CreateOptions{Size: 64<<40 + 512}, "64 TiB"},
		{filepath.Join(dir, "s.vhdx"), vhdx.CreateOptions{Size: 4096, SectorSize: 4096, BlockSize: 3 << 20}, "power of two"},
		{filepath.Join(dir, "s.vhdx"), vhdx.CreateOptions{Size: 4096, SectorSize: 1024}, "512 or 4096"},
	} {
		err := vhdx.Create(c.path, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Create(%s, %+v): %v; want an error saying %q", filepath.Base(c.path), c.o, err, c.want)
		}
	}
	if b, _ := os.ReadFile(exist); string(b) != "keep" {
		t.Errorf("the existing file was changed: %q", b)
	}
	if err := vhdx.Create(exist, vhdx.CreateOptions{Size: 1 << 20}); !errors.Is(err, os.ErrExist) {
		t.Errorf("error %v does not wrap os.ErrExist", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
