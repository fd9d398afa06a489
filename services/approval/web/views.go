package web

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/approval"
	"github.com/nats-io/nats.go/jetstream"
)

// How much history the console and GET /api/v1/revocations show.
const (
	recentWindow = 24 * time.Hour
	recentLimit  = 20
)

// GrantView is an active grant.
type GrantView struct {
	GrantID     string    `json:"grant_id"`
	RequestID   string    `json:"request_id"`
	Agent       string    `json:"agent"`
	Permissions []string  `json:"permissions"`
	Reason      string    `json:"reason"`
	Mode        string    `json:"mode"`
	ApprovedBy  string    `json:"approved_by"`
	GrantedAt   time.Time `json:"granted_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// RevocationView is a recent revocation.
type RevocationView struct {
	GrantID     string    `json:"grant_id"`
	Agent       string    `json:"agent"`
	Permissions []string  `json:"permissions"`
	Reason      string    `json:"reason"`
	Detail      string    `json:"detail,omitempty"`
	RevokedBy   string    `json:"revoked_by"`
	RevokedAt   time.Time `json:"revoked_at"`
}

// SuspensionView is a suspended agent.
type SuspensionView struct {
	Agent       string    `json:"agent"`
	Rule        string    `json:"rule"`
	Detail      string    `json:"detail,omitempty"`
	SuspendedBy string    `json:"suspended_by"`
	SuspendedAt time.Time `json:"suspended_at"`
}

// kvValues reads every live value of kv in one pass.
func kvValues(ctx context.Context, kv jetstream.KeyValue) ([][]byte, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var out [][]byte
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read %s: watcher closed", kv.Bucket())
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e.Value())
		}
	}
}

// activeGrants lists the grants that count now, soonest expiry first.
func (w *Console) activeGrants(ctx context.Context) ([]GrantView, error) {
	vals, err := kvValues(ctx, w.d.Buckets.Grants)
	if err != nil {
		return nil, err
	}
	now := w.now()
	out := []GrantView{}
	for _, b := range vals {
		var g events.Grant
		if json.Unmarshal(b, &g) != nil || !g.ActiveAt(now) {
			continue
		}
		out = append(out, GrantView{GrantID: g.GrantID, RequestID: g.RequestID, Agent: g.Agent, Permissions: g.Permissions,
			Reason: g.Reason, Mode: g.Mode, ApprovedBy: g.ApprovedBy.ID, GrantedAt: g.GrantedAt, ExpiresAt: g.ExpiresAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExpiresAt.Before(out[j].ExpiresAt) })
	return out, nil
}

// recentRevocations lists the revocations of the last day from the
// revoker's ledger, newest first, at most recentLimit.
func (w *Console) recentRevocations(ctx context.Context) ([]RevocationView, error) {
	vals, err := kvValues(ctx, w.d.Buckets.Leases)
	if err != nil {
		return nil, err
	}
	since := w.now().Add(-recentWindow)
	out := []RevocationView{}
	for _, b := range vals {
		var l events.Lease
		if json.Unmarshal(b, &l) != nil || l.Revocation == nil || l.Revocation.RevokedAt.Before(since) {
			continue
		}
		r := l.Revocation
		out = append(out, RevocationView{GrantID: r.GrantID, Agent: r.Agent, Permissions: r.Permissions, Reason: r.Reason,
			Detail: r.Detail, RevokedBy: r.RevokedBy.String(), RevokedAt: r.RevokedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RevokedAt.After(out[j].RevokedAt) })
	if len(out) > recentLimit {
		out = out[:recentLimit]
	}
	return out, nil
}

// suspensions lists the suspended agents, newest first.
func (w *Console) suspensions(ctx context.Context) ([]SuspensionView, error) {
	vals, err := kvValues(ctx, w.d.Buckets.Suspensions)
	if err != nil {
		return nil, err
	}
	out := []SuspensionView{}
	for _, b := range vals {
		var su events.Suspension
		if json.Unmarshal(b, &su) != nil || su.Agent == "" {
			continue
		}
		out = append(out, SuspensionView{Agent: su.Agent, Rule: su.Rule, Detail: su.Detail,
			SuspendedBy: su.SuspendedBy.String(), SuspendedAt: su.SuspendedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SuspendedAt.After(out[j].SuspendedAt) })
	return out, nil
}

// isAdmin reports whether a may revoke grants and reinstate agents.
func isAdmin(a *config.Approver) bool {
	return a != nil && slices.ContainsFunc(config.ReinstateRoles, func(r string) bool { return a.HasRole(r) })
}

// approveLabel is the text of a request's approve button: what the grant
// will be, given what the form holds (the console's script updates it as
// the approver edits).
func approveLabel(p approval.PendingView, d *draft) string {
	perms, dur := p.Permissions, duration(p.DurationMS)
	if d != nil && d.RequestID == p.RequestID && d.Action == "approve" {
		if d.Perms != nil {
			perms = slices.DeleteFunc(slices.Clone(p.Permissions), func(x string) bool { return !slices.Contains(d.Perms, x) })
		}
		if d.Duration != "" {
			dur = d.Duration
		}
	}
	if len(perms) == 0 {
		return "Approve: tick a permission first"
	}
	return "Approve " + strings.Join(perms, ", ") + " for " + dur
}

// dict builds a map for a template call: dict "K1" v1 "K2" v2.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, fmt.Errorf("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// howText names how a request ended, for people.
func howText(how string) string {
	switch how {
	case howApproved:
		return "Approved"
	case howNarrowed:
		return "Approved, narrowed"
	case howDenied:
		return "Denied"
	case howTimedOut:
		return "Timed out"
	case howWithdrawn:
		return "Withdrawn"
	case howSuspended:
		return "Denied, agent suspended"
	case howExpired:
		return "Approved too late: ended before it could be granted"
	}
	return capitalize(how)
}

// byText says who ended a request.
func byText(d DecisionView) string {
	switch d.How {
	case howTimedOut:
		return "nobody answered before the deadline"
	case howWithdrawn:
		return "withdrawn by the agent " + d.Agent
	case howSuspended:
		return "the agent was suspended by " + d.DecidedBy
	case howExpired:
		return "its decision was handled after the grant's end (a restart); nothing was granted"
	}
	return "by " + d.DecidedBy
}
