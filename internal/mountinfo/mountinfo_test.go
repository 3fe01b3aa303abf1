package mountinfo

import "testing"

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
