package protect

import (
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
)

// TypePublicationChanged is the alert type for publication membership
// changed behind witnz's back.
const TypePublicationChanged = alerts.TypePublicationChanged

// PublicationRestoredAlert says a protected table was found outside the
// publication at start-up and was put back: changes made while it was out
// are not in its log, and verification will name the rows they touched.
func PublicationRestoredAlert(slot, table, publication string) *alertv1.Alert {
	detail, err := structpb.NewStruct(map[string]any{"table": table, "publication": publication, "action": "re-added"})
	if err != nil {
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    alerts.ID(slot, table, 0, 0, TypePublicationChanged+"/restored/"+timestamppb.Now().AsTime().Format("2006-01-02T15:04")),
		Type:       TypePublicationChanged,
		Severity:   alertv1.Severity_SEVERITY_CRITICAL,
		Message:    fmt.Sprintf("protected table %s was removed from publication %s while cdc-ingest was not running; it has been added back, but changes made while it was out are not in its log: run `witnz verify %s` to find the rows they touched", table, publication, table),
		Source:     alerts.Source,
		Table:      table,
		Detail:     detail,
		OccurredAt: timestamppb.Now(),
	}
}
