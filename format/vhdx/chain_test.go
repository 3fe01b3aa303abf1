package vhdx_test

import (
	"crypto/sha256"
	"encoding/hex"

	"fmt"
	"hash"
	"os"
	"strings"

	"github.com/vhdmount/vhdmount/format/layer"
	"github.com/vhdmount/vhdmount/format/vhdx"
)

// This file is a tiny test-side chain: it resolves parents through
// Parent().Candidates and MatchParent, and reads the flat disk through Map
// and ReadData. The real chain lives in package format.

func openFile(path string) (*vhdx.Layer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	l, err := vhdx.Open(path, f, vhdx.Options{ReadOnly: true})
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

type chain []layer.Layer // top first

func (c chain) Close() {
	for _, l := range c {
		l.Close()
	}
}

// openChain opens path and its parents, trying each layer's candidates in
// order: the first regular file that opens and matches wins.
func openChain(path string, open func(string) (*vhdx.Layer, error)) (chain, error) {
	top, err := open(path)
	if err != nil {
		return nil, err
	}
	c := chain{top}
	for cur := layer.Layer(top); cur.Parent() != nil; {
		if len(c) > 16 {
			c.Close()
			return nil, fmt.Errorf("%s: chain deeper than 16", path)
		}
		ref := cur.Parent()
		var tried []string
		var mismatch error
		var found layer.Layer
		for _, cand := range ref.Candidates {
			fi, err := os.Stat(cand.Path)
			if err != nil || !fi.Mode().IsRegular() {
				tried = append(tried, fmt.Sprintf("%s %q -> %s: not a regular file", cand.Source, cand.Raw, cand.Path))
				continue
			}
			p, err := open(cand.Path)
			if err != nil {
				tried = append(tried, fmt.Sprintf("%s -> %s: %v", cand.Source, cand.Path, err))
				continue
			}
			if err := cur.MatchParent(p); err != nil {
				p.Close()
				mismatch = err
				tried = append(tried, err.Error())
				continue
			}
			found = p
			break
		}
		if found == nil {
			c.Close()
			if mismatch != nil {
				return nil, fmt.Errorf("%s: parent linkage mismatch (tried %s): %w", cur.Path(), strings.Join(tried, "; "), mismatch)
			}
			return nil, fmt.Errorf("%s: parent not found (wanted %s; tried %s)", cur.Path(), ref.ID, strings.Join(tried, "; "))
		}
		c = append(c, found)
		cur = found
	}
	return c, nil
}

var zeros = make([]byte, 4<<20)

// walk visits [off, off+n) of layer d of the chain as pieces: data (with the
// layer and file offset) or zeros (file offset -1).
func (c chain) walk(d int, off, n int64, visit func(l layer.Layer, fileOff, n int64) error) error {
	if d >= len(c) {
		return visit(nil, -1, n)
	}
	l := c[d]
	if off >= l.Size() {
		return visit(nil, -1, n)
	}
	if over := off + n - l.Size(); over > 0 {
		if err := c.walk(d, off, n-over, visit); err != nil {
			return err
		}
		return visit(nil, -1, over)
	}
	runs, err := l.Map(nil, off, n)
	if err != nil {
		return err
	}
	var sum int64
	for _, r := range runs {
		switch r.State {
		case layer.Data:
			err = visit(l, r.FileOff, r.Len)
		case layer.Zero:
			err = visit(nil, -1, r.Len)
		case layer.Parent:
			err = c.walk(d+1, off, r.Len, visit)
		default:
			err = fmt.Errorf("bad state %v", r.State)
		}
		if err != nil {
			return err
		}
		off += r.Len
		sum += r.Len
	}
	if sum != n {
		return fmt.Errorf("%s: Map returned %d bytes of runs for %d", l.Path(), sum, n)
	}
	return nil
}

// ReadAt reads the flat disk.
func (c chain) ReadAt(p []byte, off int64) (int, error) {
	pos := 0
	err := c.walk(0, off, int64(len(p)), func(l layer.Layer, fo, n int64) error {
		if l == nil {
			clear(p[pos : pos+int(n)])
		} else if err := l.ReadData(p[pos:pos+int(n)], fo); err != nil {
			return err
		}
		pos += int(n)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// sha256 hashes the flat disk; zeros are hashed from a shared buffer.
func (c chain) sha256() (string, error) {
	h := sha256.New()
	buf := make([]byte, 4<<20)
	size := c[0].Size()
	const window = 256 << 20
	for off := int64(0); off < size; off += window {
		n := min(window, size-off)
		err := c.walk(0, off, n, func(l layer.Layer, fo, n int64) error {
			if l == nil {
				return hashZeros(h, n)
			}
			for n > 0 {
				k := min(n, int64(len(buf)))
				if err := l.ReadData(buf[:k], fo); err != nil {
					return err
				}
				h.Write(buf[:k])
				fo += k
				n -= k
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashZeros(h hash.Hash, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
	return nil
}
