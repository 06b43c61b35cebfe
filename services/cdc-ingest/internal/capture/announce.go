package capture

import (
	"sync"

	"github.com/witnz/witnz/libs/commitment"
)

// Announcements remember the schema changes and renames of protected
// tables that the catalog check has already alerted. pgoutput describes a
// changed table only before the table's next change, so the replication
// stream often meets a change the catalog check reported minutes earlier:
// it still logs the SCHEMA entry at its place, but does not alert a second
// time. The memory is this process's: after a restart the stream may
// alert a change the catalog check reported before it. Methods are safe
// for concurrent use and on a nil receiver (which remembers nothing).
type Announcements struct {
	mu      sync.Mutex
	schemas map[string]schemaChange // table → schema change alerted
	renames map[string]string       // table → new name alerted
}

type schemaChange struct{ from, to commitment.Commitment }

// NewAnnouncements returns an empty memory.
func NewAnnouncements() *Announcements {
	return &Announcements{schemas: map[string]schemaChange{}, renames: map[string]string{}}
}

// SchemaAlerted notes that the change of table's schema from the
// commitment from to the commitment to was alerted.
func (a *Announcements) SchemaAlerted(table string, from, to commitment.Commitment) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.schemas[table] = schemaChange{from, to}
}

// RenameAlerted notes that the rename of table to newName was alerted.
func (a *Announcements) RenameAlerted(table, newName string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.renames[table] = newName
}

// takeSchema reports whether the change of table's schema from → to was
// alerted, and forgets what was noted for table: its SCHEMA entry is being
// logged, and a later change is a new one.
func (a *Announcements) takeSchema(table string, from, to commitment.Commitment) bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.schemas[table]
	delete(a.schemas, table)
	return ok && c.from == from && c.to == to
}

// takeRename reports whether the rename of table to newName was alerted,
// and forgets what was noted for table.
func (a *Announcements) takeRename(table, newName string) bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n, ok := a.renames[table]
	delete(a.renames, table)
	return ok && n == newName
}

// Schema returns the schema change of table noted as alerted, if any.
func (a *Announcements) Schema(table string) (from, to commitment.Commitment, ok bool) {
	if a == nil {
		return from, to, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.schemas[table]
	return c.from, c.to, ok
}
