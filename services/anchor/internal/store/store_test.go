package store

import (
	"strings"
	"testing"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
)

func TestAddListReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if err := s.Add(&anchorv1.Receipt{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v, want a lock error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := s.List(2)
	if err != nil || len(l) != 2 || l[0].GetKey() != "c" || l[1].GetKey() != "b" {
		t.Fatalf("List(2) = %v, %v", l, err)
	}
	r, err := s.Latest()
	if err != nil || r.GetKey() != "c" {
		t.Fatalf("Latest = %v, %v", r, err)
	}
}

func TestPending(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"b", "a"} {
		if err := s.AddPending(&anchorv1.Receipt{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.Pending()
	if err != nil || len(p) != 2 || p[0].GetKey() != "a" {
		t.Fatalf("Pending = %v, %v", p, err)
	}
	if err := s.Commit(&anchorv1.Receipt{Key: "a", WitnessRaftIndex: 7}); err != nil {
		t.Fatal(err)
	}
	if err := s.DropPending("b"); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Pending()
	l, _ := s.List(0)
	if len(p) != 0 || len(l) != 1 || l[0].GetWitnessRaftIndex() != 7 {
		t.Fatalf("after Commit and DropPending: pending %v, receipts %v", p, l)
	}
}
