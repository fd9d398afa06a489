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
func Observe(e events.Event) { ObservePayload(e, nil) }

// ObservePayload is Observe for an event built from payload (the value
// given to events.New): the fields a series needs are read from it, with no
// decoding of the JSON just encoded, when it is one of the payload types
// measured (value or pointer); any other payload, or nil, falls back to
// decoding e's data.
func ObservePayload(e events.Event, payload any) {
	if off.Load() {
		return
	}
	typ := e.Type()
	Published.WithLabelValues(typ).Inc()
	switch typ {
	case events.TypeDecided:
		d, ok := as[events.Decision](payload)
		if !ok {
			var j struct {
				Outcome   string    `json:"outcome"`
				Mode      string    `json:"mode"`
				DecidedAt time.Time `json:"decided_at"`
				Request   struct {
					RequestedAt time.Time `json:"requested_at"`
				} `json:"request"`
			}
			if !decode(e, &j) {
				return
			}
			d.Outcome, d.Mode, d.DecidedAt, d.Request.RequestedAt = j.Outcome, j.Mode, j.DecidedAt, j.Request.RequestedAt
		}
		decided(d.Outcome, d.Mode, d.Request.RequestedAt, d.DecidedAt)
	case events.TypeGranted:
		mode := ""
		if g, ok := as[events.Grant](payload); ok {
			mode = g.Mode
		} else {
			var j struct {
				Mode string `json:"mode"`
			}
			if !decode(e, &j) {
				return
			}
			mode = j.Mode
		}
		Grants.WithLabelValues(mode).Inc()
	case events.TypeRevoked:
		r, ok := as[events.Revocation](payload)
		if !ok {
			var j struct {
				Agent     string    `json:"agent"`
				Reason    string    `json:"reason"`
				RevokedAt time.Time `json:"revoked_at"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			if !decode(e, &j) {
				return
			}
			r.Agent, r.Reason, r.RevokedAt, r.ExpiresAt = j.Agent, j.Reason, j.RevokedAt, j.ExpiresAt
		}
		revoked(r.Agent, r.Reason, r.ExpiresAt, r.RevokedAt)
	case events.TypeGuardrailFired:
		rule := ""
		if g, ok := as[events.GuardrailFired](payload); ok {
			rule = g.Rule
		} else {
			var j struct {
				Rule string `json:"rule"`
			}
			if !decode(e, &j) {
				return
			}
			rule = j.Rule
		}
		GuardrailsFired.WithLabelValues(rule).Inc()
	case events.TypeSuspended:
		Suspensions.Inc()
	case events.TypeReinstated:
		Reinstatements.Inc()
	case events.TypeRejected:
		stage, code := "", ""
		if r, ok := as[events.Rejection](payload); ok {
			stage, code = r.Stage, r.Code
		} else {
			var j struct {
				Stage string `json:"stage"`
				Code  string `json:"code"`
			}
			if !decode(e, &j) {
				return
			}
			stage, code = j.Stage, j.Code
		}
		Rejected.WithLabelValues(stage, code).Inc()
	}
}

// as returns payload as a T, whether it holds a T or a non-nil *T.
func as[T any](payload any) (T, bool) {
	switch v := payload.(type) {
	case T:
		return v, true
	case *T:
		if v != nil {
			return *v, true
		}
	}
	var zero T
	return zero, false
}

func decided(outcome, mode string, requested, decidedAt time.Time) {
	Requests.WithLabelValues(outcome, mode).Inc()
	switch mode {
	case events.ModeAutoApprove, events.ModePolicy, events.ModeRequireApproval, events.ModeDeny, events.ModeDefaultDeny:
		// The policy service's own decisions; a human's or a time-out's
		// latency is the wait for the human.
		if s, ok := since(requested, decidedAt); ok {
			DecisionLatency.Observe(s)
		}
	}
}

func revoked(agent, reason string, expiresAt, revokedAt time.Time) {
	Revocations.WithLabelValues(reason).Inc()
	switch reason {
	case events.RevokedExpired:
		if s, ok := since(expiresAt, revokedAt); ok {
			RevocationLag.WithLabelValues(reason).Observe(s)
		}
	case events.RevokedGuardrail:
		if fired, ok := guardrails.get(agent); ok {
			if s, ok := since(fired, revokedAt); ok {
				RevocationLag.WithLabelValues(reason).Observe(s)
			}
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
