package metrics

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// off is set by Disable.
var off atomic.Bool

// Disable stops recording what happens on the request path (Observe,
// GrantAnnounced, GuardrailHandled, and the API calls the service entry
// counts; Enabled reports it) for the rest of the process. /metrics still
// answers, with what is read at scrape time. Only to measure what the
// instrumentation costs (jitd --no-metrics, BENCH.md).
func Disable() { off.Store(true) }

// Enabled reports whether the request path is recorded (see Disable).
func Enabled() bool { return !off.Load() }

// Observe counts e, an event this process has just stored on the audit
// stream for the first time (a duplicate acknowledgement is not a new
// event). It decodes the data only of the types it measures; an event
// whose data does not decode is counted by type only. It never fails.
func Observe(e events.Event) {
	if off.Load() {
		return
	}
	typ := e.Type()
	Published.WithLabelValues(typ).Inc()
	switch typ {
	case events.TypeDecided:
		var d struct {
			Outcome   string    `json:"outcome"`
			Mode      string    `json:"mode"`
			DecidedAt time.Time `json:"decided_at"`
			Request   struct {
				RequestedAt time.Time `json:"requested_at"`
			} `json:"request"`
		}
		if !decode(e, &d) {
			return
		}
		Requests.WithLabelValues(d.Outcome, d.Mode).Inc()
		switch d.Mode {
		case events.ModeAutoApprove, events.ModePolicy, events.ModeRequireApproval, events.ModeDeny, events.ModeDefaultDeny:
			// The policy service's own decisions; a human's or a
			// time-out's latency is the wait for the human.
			if s, ok := since(d.Request.RequestedAt, d.DecidedAt); ok {
				DecisionLatency.Observe(s)
			}
		}
	case events.TypeGranted:
		var g struct {
			Mode string `json:"mode"`
		}
		if decode(e, &g) {
			Grants.WithLabelValues(g.Mode).Inc()
		}
	case events.TypeRevoked:
		var r struct {
			Agent     string    `json:"agent"`
			Reason    string    `json:"reason"`
			RevokedAt time.Time `json:"revoked_at"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if !decode(e, &r) {
			return
		}
		Revocations.WithLabelValues(r.Reason).Inc()
		switch r.Reason {
		case events.RevokedExpired:
			if s, ok := since(r.ExpiresAt, r.RevokedAt); ok {
				RevocationLag.WithLabelValues(r.Reason).Observe(s)
			}
		case events.RevokedGuardrail:
			if fired, ok := guardrails.get(r.Agent); ok {
				if s, ok := since(fired, r.RevokedAt); ok {
					RevocationLag.WithLabelValues(r.Reason).Observe(s)
				}
			}
		}
	case events.TypeGuardrailFired:
		var g struct {
			Rule string `json:"rule"`
		}
		if decode(e, &g) {
			GuardrailsFired.WithLabelValues(g.Rule).Inc()
		}
	case events.TypeSuspended:
		Suspensions.Inc()
	case events.TypeReinstated:
		Reinstatements.Inc()
	case events.TypeRejected:
		var r struct {
			Stage string `json:"stage"`
			Code  string `json:"code"`
		}
		if decode(e, &r) {
			Rejected.WithLabelValues(r.Stage, r.Code).Inc()
		}
	}
}

// decode reads the few fields a series needs from e's JSON data (not
// events.DataAs: its strict, validating decode costs tens of microseconds
// per event, and the event was valid when it was built).
func decode(e events.Event, v any) bool {
	return json.Unmarshal(e.Data(), v) == nil
}

// GrantAnnounced records a grant's request-to-grant latency: requested is
// the request's requested_at, granted the grant's granted_at. The approval
// service calls it once it stored jit.granted for the first time.
func GrantAnnounced(mode string, requested, granted time.Time) {
	if off.Load() {
		return
	}
	if s, ok := since(requested, granted); ok {
		RequestToGrant.WithLabelValues(mode).Observe(s)
	}
}

// GuardrailHandled tells the revocation-lag histogram when the guardrail
// that is about to revoke agent's grants fired (the revoker calls it before
// it revokes them).
func GuardrailHandled(agent string, firedAt time.Time) {
	if !off.Load() {
		guardrails.set(agent, firedAt)
	}
}

// guardrails remembers the latest guardrail fire per agent: bounded by the
// number of agents the configuration names.
var guardrails = firedTimes{m: map[string]time.Time{}}

type firedTimes struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (f *firedTimes) set(agent string, t time.Time) {
	if t.IsZero() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) > 100_000 {
		clear(f.m)
	}
	f.m[agent] = t
}

func (f *firedTimes) get(agent string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.m[agent]
	return t, ok
}
