package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// validator is what every event payload with a Validate method offers.
type validator interface{ Validate() error }

func TestValidate(t *testing.T) {
	at := time.Unix(1_700_000_000, 0).UTC()
	deadline := at.Add(time.Hour)
	approved := events.Decision{RequestID: "req-1", Agent: "market-intel", Outcome: events.OutcomeApproved,
		Permissions: []string{"data:write"}, DurationMS: 60_000, DecidedAt: at}
	with := func(f func(d *events.Decision)) events.Decision { d := approved; f(&d); return d }
	long := strings.Repeat("x", 200)

	for _, tc := range []struct {
		name string
		v    validator
		bad  string // "" when valid; otherwise a part of the error
	}{
		{"request", events.Request{RequestID: "req-1", Agent: "market-intel"}, ""},
		{"request bad id", events.Request{RequestID: "req 1", Agent: "market-intel"}, `request_id "req 1"`},
		{"request bad agent", events.Request{RequestID: "req-1", Agent: "a.b"}, `agent "a.b"`},

		{"decision approved", approved, ""},
		{"decision denied needs no permissions", events.Decision{RequestID: "req-1", Agent: "a", Outcome: events.OutcomeDenied}, ""},
		{"decision pending with deadline", events.Decision{RequestID: "req-1", Agent: "a", Outcome: events.OutcomePending, ApprovalDeadline: &deadline}, ""},
		{"decision pending with decided_at", events.Decision{RequestID: "req-1", Agent: "a", Outcome: events.OutcomePending, DecidedAt: at}, ""},
		{"decision pending without either", events.Decision{RequestID: "req-1", Agent: "a", Outcome: events.OutcomePending}, "neither decided_at nor approval_deadline"},
		{"decision bad request id", with(func(d *events.Decision) { d.RequestID = "" }), `request_id ""`},
		{"decision long agent is cut", with(func(d *events.Decision) { d.Agent = long }), strings.Repeat("x", 80) + "…"},
		{"decision unknown outcome", with(func(d *events.Decision) { d.Outcome = "maybe" }), `unknown outcome "maybe"`},
		{"decision approved nothing", with(func(d *events.Decision) { d.Permissions = nil }), "names no permissions"},
		{"decision zero duration", with(func(d *events.Decision) { d.DurationMS = 0 }), "must be positive"},
		{"decision duration above the limit", with(func(d *events.Decision) { d.DurationMS = events.MaxGrantDuration.Milliseconds() + 1 }), "above the 24h0m0s limit"},
		{"decision duration that overflows", with(func(d *events.Decision) { d.DurationMS = 1 << 62 }), "above the 24h0m0s limit"},
		{"decision approved without decided_at", with(func(d *events.Decision) { d.DecidedAt = time.Time{} }), "no decided_at"},

		{"suspension", events.Suspension{Agent: "market-intel"}, ""},
		{"suspension bad agent", events.Suspension{Agent: "*"}, `agent "*"`},

		{"guardrail", events.GuardrailFired{Agent: "a", Rule: "price-floor"}, ""},
		{"guardrail no rule", events.GuardrailFired{Agent: "a", Rule: "  "}, "rule must be"},
		{"guardrail long detail", events.GuardrailFired{Agent: "a", Rule: "r", Detail: strings.Repeat("d", 4097)}, "detail longer"},

		{"withdrawal", events.Withdrawal{Agent: "a", RequestID: "req-1"}, ""},
		{"withdrawal bad request id", events.Withdrawal{Agent: "a", RequestID: "req/1"}, `request id "req/1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.v.Validate()
			if tc.bad == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, events.ErrInvalid)
			require.ErrorContains(t, err, tc.bad)
		})
	}
}
