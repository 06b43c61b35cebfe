package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// Status is the output of `witnz status --json`. Its shape is a public
// contract (see the README): fields are only ever added.
type Status struct {
	Witnesses []WitnessStatus `json:"witnesses"`
	Tables    []TableStatus   `json:"tables"`
	Ingest    IngestStatus    `json:"ingest"`
}

// WitnessStatus is one witness node as the gateway sees it.
type WitnessStatus struct {
	ID           string `json:"id"`
	Address      string `json:"address"`
	Reachable    bool   `json:"reachable"`
	Error        string `json:"error"`
	State        string `json:"state"`
	LeaderID     string `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Term         uint64 `json:"term"`
}

// TableStatus is one protected table's log across the witnesses.
type TableStatus struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Size and Root are the leader's view (else the first reachable node's).
	Size uint64 `json:"size"`
	Root string `json:"root"`
	// Agree is true when every reachable node reports the same size and
	// root.
	Agree bool                   `json:"agree"`
	Nodes map[string]TableAtNode `json:"nodes"`
}

// TableAtNode is one node's view of a table's log.
type TableAtNode struct {
	Size uint64 `json:"size"`
	Root string `json:"root"`
}

// IngestStatus is cdc-ingest's pipeline.
type IngestStatus struct {
	Reachable         bool   `json:"reachable"`
	Error             string `json:"error"`
	Slot              string `json:"slot"`
	Publication       string `json:"publication"`
	Streaming         bool   `json:"streaming"`
	ServerLSN         string `json:"server_lsn"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn"`
	LagBytes          uint64 `json:"lag_bytes"`
	PendingEntries    uint64 `json:"pending_entries"`
}

func runStatus(ctx context.Context, c *invocation) error {
	fs := c.flagSet("status", "[--json] [--stack FILE | --gateway URL --tls-cert F --tls-key F --tls-ca F]")
	asJSON := fs.Bool("json", false, "print the status as JSON (stable shape, see the README)")
	gf := addGatewayFlags(fs)
	if err := parse(fs, c.args); err != nil {
		return err
	}
	gw, err := gf.connect(c.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := gw.client.GetStatus(ctx, connect.NewRequest(&gatewayv1.GetStatusRequest{}))
	if err != nil {
		return gw.callError("GetStatus", err)
	}
	st := statusFrom(resp.Msg, gw.witnessIDs)
	if *asJSON {
		return writeJSON(c.stdout, st)
	}
	printStatus(c.stdout, st)
	return nil
}

// statusFrom condenses the gateway's answer. ids names witnesses by API
// URL for the nodes that could not be asked their own id.
func statusFrom(resp *gatewayv1.GetStatusResponse, ids map[string]string) Status {
	st := Status{Witnesses: []WitnessStatus{}, Tables: []TableStatus{}}
	type nodeTables struct {
		id     string
		leader bool
		tables []*witnessv1.TableInfo
	}
	var reachable []nodeTables
	for _, w := range resp.GetWitnesses() {
		ws := WitnessStatus{Address: w.GetAddress(), Error: w.GetError()}
		s := w.GetStatus()
		ws.Reachable = ws.Error == "" && s != nil
		ws.ID = firstNonEmpty(s.GetNodeId(), ids[ws.Address], ws.Address)
		if ws.Reachable {
			ws.State = s.GetState()
			ws.LeaderID = s.GetLeaderId()
			ws.AppliedIndex = s.GetAppliedIndex()
			ws.CommitIndex = s.GetCommitIndex()
			ws.Term = s.GetTerm()
			reachable = append(reachable, nodeTables{ws.ID, s.GetState() == "Leader", s.GetTables()})
		}
		st.Witnesses = append(st.Witnesses, ws)
	}
	// The leader's view goes first so it names each table's size and root.
	slices.SortStableFunc(reachable, func(a, b nodeTables) int {
		switch {
		case a.leader == b.leader:
			return 0
		case a.leader:
			return -1
		}
		return 1
	})
	byName := map[string]*TableStatus{}
	var names []string
	for _, n := range reachable {
		for _, t := range n.tables {
			ts, ok := byName[t.GetName()]
			if !ok {
				ts = &TableStatus{Name: t.GetName(), Mode: modeName(t.GetMode()), Size: t.GetSize(), Root: hex.EncodeToString(t.GetRoot()), Nodes: map[string]TableAtNode{}}
				byName[t.GetName()] = ts
				names = append(names, t.GetName())
			}
			ts.Nodes[n.id] = TableAtNode{Size: t.GetSize(), Root: hex.EncodeToString(t.GetRoot())}
		}
	}
	slices.Sort(names)
	for _, name := range names {
		ts := byName[name]
		ts.Agree = len(ts.Nodes) == len(reachable)
		for _, n := range ts.Nodes {
			ts.Agree = ts.Agree && n.Size == ts.Size && n.Root == ts.Root
		}
		st.Tables = append(st.Tables, *ts)
	}
	in := resp.GetIngest()
	st.Ingest = IngestStatus{
		Reachable:         resp.GetIngestError() == "" && in != nil,
		Error:             resp.GetIngestError(),
		Slot:              in.GetSlotName(),
		Publication:       in.GetPublication(),
		Streaming:         in.GetStreaming(),
		ServerLSN:         in.GetServerLsn(),
		ConfirmedFlushLSN: in.GetConfirmedFlushLsn(),
		LagBytes:          in.GetLagBytes(),
		PendingEntries:    in.GetPendingEntries(),
	}
	if !st.Ingest.Reachable && st.Ingest.Error == "" {
		st.Ingest.Error = "the gateway returned no ingest status"
	}
	return st
}

func modeName(m witnessv1.TableMode) string {
	switch m {
	case witnessv1.TableMode_TABLE_MODE_APPEND_ONLY:
		return "append-only"
	case witnessv1.TableMode_TABLE_MODE_MUTABLE:
		return "mutable"
	}
	return "unspecified"
}

func printStatus(w io.Writer, st Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WITNESS\tADDRESS\tSTATE\tLEADER\tAPPLIED\tCOMMIT\tTERM")
	var unreachable []WitnessStatus
	for _, ws := range st.Witnesses {
		if !ws.Reachable {
			fmt.Fprintf(tw, "%s\t%s\tUNREACHABLE\t-\t-\t-\t-\n", ws.ID, ws.Address)
			unreachable = append(unreachable, ws)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", ws.ID, ws.Address, ws.State, ws.LeaderID, ws.AppliedIndex, ws.CommitIndex, ws.Term)
	}
	tw.Flush()
	for _, ws := range unreachable {
		fmt.Fprintf(w, "%s: %s\n", ws.ID, ws.Error)
	}
	fmt.Fprintln(w)
	if len(st.Tables) == 0 {
		fmt.Fprintln(w, "no protected tables reported by the witnesses")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tMODE\tSIZE\tROOT\tWITNESSES")
		for _, t := range st.Tables {
			agree := "agree"
			if !t.Agree {
				agree = "DISAGREE"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s (%d)\n", t.Name, t.Mode, t.Size, short(t.Root), agree, len(t.Nodes))
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	in := st.Ingest
	if !in.Reachable {
		fmt.Fprintf(w, "ingest: unreachable: %s\n", in.Error)
		return
	}
	streaming := "streaming"
	if !in.Streaming {
		streaming = "NOT streaming"
	}
	fmt.Fprintf(w, "ingest: slot %s, publication %s, %s; server %s, confirmed %s, lag %d bytes, %d entries pending\n",
		in.Slot, in.Publication, streaming, in.ServerLSN, in.ConfirmedFlushLSN, in.LagBytes, in.PendingEntries)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
