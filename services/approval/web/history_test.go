package web

import (
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// TestHistoryIsBounded: the history keeps the newest historyKeep decisions
// and the votes of at most historyKeep undecided requests.
func TestHistoryIsBounded(t *testing.T) {
	h := newHistory(nil)
	now := time.Now().UTC()
	for i := range historyKeep + 50 {
		id := fmt.Sprintf("req_%d", i)
		h.addVote(events.Approval{RequestID: "open_" + id, Approver: events.Actor{ID: "alice"}})
		h.addDecision(events.Decision{RequestID: id, Agent: "a", Outcome: events.OutcomeDenied, Mode: events.ModeTimeout,
			DecidedAt: now.Add(time.Duration(i) * time.Millisecond)})
	}
	require.Len(t, h.decisions, historyKeep)
	require.Len(t, h.order, historyKeep)
	require.Len(t, h.votes, historyKeep)
	_, ok := h.decision("req_0")
	require.False(t, ok, "the oldest decisions are dropped")
	d, ok := h.decision(fmt.Sprintf("req_%d", historyKeep+49))
	require.True(t, ok)
	require.Equal(t, howTimedOut, d.How)
	recent := h.recent(now.Add(time.Second), 20)
	require.Len(t, recent, 20)
	require.Equal(t, fmt.Sprintf("req_%d", historyKeep+49), recent[0].RequestID, "newest first")
}
