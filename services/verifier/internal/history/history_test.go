package history

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
)

func run(table string, at time.Time, outcome verifierv1.Outcome) *verifierv1.VerifyResponse {
	return &verifierv1.VerifyResponse{Table: table, StartedAt: timestamppb.New(at), Outcome: outcome, Ok: outcome == verifierv1.Outcome_OUTCOME_OK}
}

func names(runs []*verifierv1.VerifyResponse) []string {
	var out []string
	for _, r := range runs {
		out = append(out, fmt.Sprintf("%s@%d", r.GetTable(), r.GetStartedAt().AsTime().Unix()))
	}
	return out
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	for name, open := range map[string]func(t *testing.T) *Store{
		"file": func(t *testing.T) *Store {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"memory": func(*testing.T) *Store { return Memory() },
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			base := time.Unix(1_800_000_000, 0)
			for i, table := range []string{"public.a", "public.b", "public.a", "public.a"} {
				// Two runs with the same start time keep both.
				if err := s.Add(run(table, base.Add(time.Duration(i/3)*time.Second), verifierv1.Outcome_OUTCOME_OK)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.List("public.a", 2)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"public.a@1800000001", "public.a@1800000000"}, names(got)); diff != "" {
				t.Errorf("List(public.a, 2) (-want +got):\n%s", diff)
			}
			all, _ := s.List("", 100)
			if len(all) != 4 || all[3].GetTable() != "public.a" || all[2].GetTable() != "public.b" {
				t.Errorf("List all = %v", names(all))
			}
		})
	}

	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(run("public.t", time.Now(), verifierv1.Outcome_OUTCOME_TAMPERED)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "is locked by another process") {
		t.Errorf("second Open of the same directory: %v", err)
	}
	s.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.List("", 10)
	if err != nil || len(got) != 1 || got[0].GetOutcome() != verifierv1.Outcome_OUTCOME_TAMPERED || !s.Persistent() {
		t.Errorf("after reopening: %v, %v", got, err)
	}
}

func TestMemoryLimit(t *testing.T) {
	s := Memory()
	for i := range MemoryLimit + 5 {
		if err := s.Add(run("public.t", time.Unix(int64(i), 0), verifierv1.Outcome_OUTCOME_OK)); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := s.List("", MemoryLimit+10)
	if len(all) != MemoryLimit || all[0].GetStartedAt().AsTime().Unix() != MemoryLimit+4 || all[len(all)-1].GetStartedAt().AsTime().Unix() != 5 {
		t.Errorf("memory store keeps %d runs, newest %v, oldest %v", len(all), all[0].GetStartedAt(), all[len(all)-1].GetStartedAt())
	}
}

func TestCheckpoints(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.LastCheckpoint("public.t"); ok || err != nil {
		t.Fatalf("LastCheckpoint of an empty store = %v, %v; want none", ok, err)
	}
	cp := Checkpoint{Size: 42, Note: []byte("witnz/default/public.t\n42\nroot\n\n— w1 sig\n")}
	cp.Root[0], cp.Root[31] = 1, 2
	if err := s.SaveCheckpoint("public.t", cp); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// It survives a restart.
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, ok, err := s.LastCheckpoint("public.t")
	if err != nil || !ok {
		t.Fatalf("LastCheckpoint after reopening = %v, %v", ok, err)
	}
	if diff := cmp.Diff(cp, got); diff != "" {
		t.Errorf("checkpoint (-want +got):\n%s", diff)
	}

	m := Memory()
	if err := m.SaveCheckpoint("public.t", cp); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := m.LastCheckpoint("public.t"); !ok || !cmp.Equal(cp, got) {
		t.Errorf("memory LastCheckpoint = %+v, %v", got, ok)
	}
}
