package api

import (
	"testing"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
)

func TestCanonicalUUID(t *testing.T) {
	for in, want := range map[string]string{
		"0f8fad5b-d9cb-469f-a165-70867728950e":  "0f8fad5b-d9cb-469f-a165-70867728950e",
		"0F8FAD5B-D9CB-469F-A165-70867728950E":  "0f8fad5b-d9cb-469f-a165-70867728950e",
		"0f8fad5bd9cb469fa16570867728950e":      "",
		"0f8fad5b-d9cb-469f-a165-70867728950":   "",
		"0f8fad5b-d9cb-469f-a165_70867728950e":  "",
		"0f8fad5b-d9cb-469f-a165-70867728950g":  "",
		"{0f8fad5b-d9cb-469f-a165-70867728950}": "",
		"":                                      "",
	} {
		got, ok := canonicalUUID(in)
		if got != want || ok != (want != "") {
			t.Errorf("canonicalUUID(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func FuzzCanonicalUUID(f *testing.F) {
	f.Add("0f8fad5b-d9cb-469f-a165-70867728950e")
	f.Add("0F8FAD5B-D9CB-469F-A165-70867728950E")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := canonicalUUID(s)
		if !ok {
			return
		}
		if again, ok2 := canonicalUUID(got); !ok2 || again != got {
			t.Fatalf("canonical form %q of %q is not stable", got, s)
		}
	})
}

func TestEventTypeName(t *testing.T) {
	for typ, want := range map[alertv1.EventType]string{
		alertv1.EventType_EVENT_TYPE_FILE_MODIFIED:   "file_modified",
		alertv1.EventType_EVENT_TYPE_NETWORK_CONNECT: "network_connect",
		alertv1.EventType_EVENT_TYPE_EVENTS_LOST:     "events_lost",
	} {
		if got := eventTypeName(typ); got != want {
			t.Errorf("eventTypeName(%v) = %q, want %q", typ, got, want)
		}
	}
}
