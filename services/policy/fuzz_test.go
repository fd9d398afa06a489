package policy

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// FuzzDecide decodes arbitrary jit.requested data as the consumer does and
// decides it at an arbitrary instant. Decide must never panic, and whatever
// it decides must hold the invariants below. The seed corpus is in
// testdata/fuzz/FuzzDecide; `go test` runs it, `go test -fuzz=FuzzDecide`
// explores from it.
func FuzzDecide(f *testing.F) {
	cfg := parse(f, "rules.yaml", rulesYAML)
	f.Add([]byte(`{"request_id":"r1","agent":"a1","permissions":["data:write"],"duration_ms":600000,"reason":"x","requested_by":{"kind":"agent","id":"a1"},"requested_at":"2025-03-05T10:00:00Z"}`), wed1000.Unix(), false)
	f.Fuzz(func(t *testing.T, data []byte, unix int64, suspended bool) {
		var req events.Request
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		// Any instant from 1970 to about 2100.
		now := time.Unix(unix%(130*365*24*3600), 0).UTC()
		d := Decide(cfg, req, now, suspended)
		checkInvariants(t, cfg, req, now, suspended, d)
		require.Equal(t, d, Decide(cfg, req, now, suspended), "deterministic")
	})
}

func checkInvariants(t *testing.T, cfg *config.Config, req events.Request, now time.Time, suspended bool, d events.Decision) {
	t.Helper()
	require.Contains(t, []string{events.OutcomeApproved, events.OutcomeDenied, events.OutcomePending}, d.Outcome)
	require.NotEmpty(t, d.Reason)
	require.NotEmpty(t, d.Mode)
	require.Contains(t, []string{events.ActorRule, events.ActorSystem}, d.DecidedBy.Kind)
	require.NotNil(t, d.Risk)
	require.GreaterOrEqual(t, d.Risk.Score, 0)
	require.LessOrEqual(t, d.Risk.Score, 100)
	require.GreaterOrEqual(t, len(d.Risk.Parts), 4)
	sum := 0
	for _, p := range d.Risk.Parts {
		require.NotEmpty(t, p.Detail)
		sum += p.Points
	}
	require.Equal(t, min(max(sum, 0), 100), d.Risk.Score)
	require.Equal(t, req, d.Request)
	require.Equal(t, now, d.DecidedAt)

	if d.Outcome == events.OutcomeDenied {
		return
	}
	// Whatever is not denied was asked by a known, unsuspended agent for
	// eligible permissions within its maximum, and no deny rule matched.
	require.False(t, suspended)
	agent, ok := cfg.Agent(req.Agent)
	require.True(t, ok)
	require.NotEmpty(t, req.Permissions)
	require.Greater(t, req.DurationMS, int64(0))
	require.LessOrEqual(t, req.DurationMS, agent.MaxJitDuration.D().Milliseconds(), "duration_ms within the maximum, without overflow")
	for _, p := range req.Permissions {
		require.True(t, agent.IsEligible(p))
		matched := false
		for _, r := range cfg.Rules {
			if r.Matches(agent.ID, p) {
				require.NotEqual(t, config.ModeDeny, r.Mode, "a deny rule matches %s", p)
				matched = true
			}
		}
		require.True(t, matched, "no rule matches %s", p)
	}
	require.Equal(t, events.ActorRule, d.DecidedBy.Kind)
	if d.Outcome == events.OutcomePending {
		require.NotEmpty(t, d.ApproverRoles)
		for _, role := range d.ApproverRoles {
			require.True(t, slices.Contains(config.KnownRoles, role))
		}
		require.NotNil(t, d.ApprovalDeadline)
		require.Equal(t, now.Add(cfg.ApprovalWindow.D()), *d.ApprovalDeadline)
	}
}
