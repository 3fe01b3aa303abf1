package mountinfo

import (
	"os"
	"testing"
)

func TestUnescape(t *testing.T) {
	if got := unescape(`/mnt/a\040b\134c`); got != `/mnt/a b\c` {
		t.Errorf("got %q", got)
	}
}

func TestListHasRoot(t *testing.T) {
	if _, ok, err := Lookup("/"); err != nil || !ok {
		t.Fatalf("Lookup(/) = %v, %v; the root is always mounted", ok, err)
	}
}

func TestListPid(t *testing.T) {
	self, err := List()
	if err != nil {
		t.Fatal(err)
	}
	byPid, err := ListPid(os.Getpid())
	if err != nil || len(byPid) != len(self) {
		t.Fatalf("ListPid(self): %d mounts, %v; List: %d", len(byPid), err, len(self))
	}
}

func TestReadOnly(t *testing.T) {
	for opts, want := range map[string]bool{"ro": true, "ro,nosuid": true, "rw,relatime": false, "rw,nosuid,nodev,relatime,errors=ro": false} {
		if got := (Mount{Options: opts}).ReadOnly(); got != want {
			t.Errorf("ReadOnly(%q) = %v", opts, got)
		}
	}
}
