package requester

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// jsAPI is the JetStream API inside the services' account.
const jsAPI = "$JS.API"

// handleEvents serves broker.APIEvents: the calling agent's own events from
// the audit stream, from a sequence on. An agent reads nothing else of the
// stream: it may not create consumers, so this and its live feed
// (jitlive.jit.*.<agent>) are how it catches up after a reconnect.
func (s *Service) handleEvents(ctx context.Context, c service.Call, in broker.EventsInput) (any, error) {
	agent, err := c.Agent(in.Agent)
	if err != nil {
		return nil, service.Refuse(asAPIError(err), s.rejection(c, broker.RequestInput{Agent: in.Agent}))
	}
	max := in.Max
	if max <= 0 || max > broker.MaxEventsPage {
		max = broker.MaxEventsPage
	}
	from := max64(in.FromSeq, 1)
	out := broker.EventsPage{Events: []broker.StoredEvent{}, NextSeq: from}
	// Two filters (jit.*.<agent>, guardrail.*.<agent>) cannot go in one
	// request: read both from the same sequence and merge in order.
	var all []broker.StoredMsg
	more := false
	for _, filter := range []string{"jit.*." + agent, "guardrail.*." + agent} {
		page, err := broker.DirectGet(ctx, s.d.NC, jsAPI, broker.AuditStream, broker.DirectGetRequest{Seq: from, NextBySubj: filter, Batch: max})
		if err != nil {
			return nil, err
		}
		all = append(all, page.Msgs...)
		more = more || page.Pending > 0
	}
	slices.SortFunc(all, func(a, b broker.StoredMsg) int { return cmp64(a.Seq, b.Seq) })
	if len(all) > max {
		all, more = all[:max], true
	}
	for _, m := range all {
		out.Events = append(out.Events, broker.StoredEvent{Seq: m.Seq, Subject: m.Subject, Event: json.RawMessage(m.Data)})
		out.NextSeq = m.Seq + 1
	}
	out.More = more
	return out, nil
}

// handleGrants serves broker.APIGrants: the calling agent's grants that are
// active now by the service's clock.
func (s *Service) handleGrants(ctx context.Context, c service.Call, in broker.GrantsInput) (any, error) {
	agent, err := c.Agent(in.Agent)
	if err != nil {
		return nil, service.Refuse(asAPIError(err), s.rejection(c, broker.RequestInput{Agent: in.Agent}))
	}
	grants, err := s.activeGrants(ctx, agent)
	if err != nil {
		return nil, err
	}
	return broker.GrantsList{Grants: grants}, nil
}

// handleCheck serves broker.APICheck: may the calling agent use a
// permission now? It is the checker's rule, read from the buckets: an
// unknown or suspended agent gets nothing (a suspension that cannot be read
// counts as one), a base permission counts, and so does an active grant
// whose expires_at is after the clock (the one lasting longest is named).
func (s *Service) handleCheck(ctx context.Context, c service.Call, in broker.CheckInput) (any, error) {
	agent, err := c.Agent(in.Agent)
	if err != nil {
		return nil, service.Refuse(asAPIError(err), s.rejection(c, broker.RequestInput{Agent: in.Agent}))
	}
	if !config.ValidPermission(in.Permission) {
		return nil, service.Refuse(broker.Errorf(400, events.CodeMalformed, "permission %s is not area:action", quote(in.Permission)),
			s.rejection(c, broker.RequestInput{Agent: agent}))
	}
	a, ok := s.d.Config.Current().Agent(agent)
	if !ok {
		return broker.CheckResult{Reason: fmt.Sprintf("unknown agent %q", agent)}, nil
	}
	susp, err := broker.Suspension(ctx, s.d.Buckets.Suspensions, agent)
	if err != nil {
		return nil, err
	}
	if susp != nil {
		return broker.CheckResult{Reason: fmt.Sprintf("agent %s is suspended by guardrail %s", agent, susp.Rule)}, nil
	}
	if slices.Contains(a.Base, in.Permission) {
		return broker.CheckResult{Allowed: true, Base: true, Reason: fmt.Sprintf("%s is a base permission of %s", in.Permission, agent)}, nil
	}
	grants, err := s.activeGrants(ctx, agent)
	if err != nil {
		return nil, err
	}
	var best *events.Grant
	for i := range grants {
		if grants[i].Has(in.Permission) && (best == nil || grants[i].ExpiresAt.After(best.ExpiresAt)) {
			best = &grants[i]
		}
	}
	if best == nil {
		return broker.CheckResult{Reason: fmt.Sprintf("%s has no active grant of %s", agent, in.Permission)}, nil
	}
	exp := best.ExpiresAt
	return broker.CheckResult{Allowed: true, GrantID: best.GrantID, ExpiresAt: &exp,
		Reason: fmt.Sprintf("granted by %s until %s", best.GrantID, exp.UTC().Format(time.RFC3339))}, nil
}

// activeGrants reads agent's grants that are active by the clock.
func (s *Service) activeGrants(ctx context.Context, agent string) ([]events.Grant, error) {
	prefix := "$KV." + broker.BucketGrants + "."
	page, err := broker.DirectGet(ctx, s.d.NC, jsAPI, "KV_"+broker.BucketGrants, broker.DirectGetRequest{MultiLast: []string{prefix + agent + ".>"}})
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := []events.Grant{}
	for _, m := range page.Msgs {
		if len(m.Data) == 0 {
			continue // a deletion or expiry marker
		}
		var g events.Grant
		if json.Unmarshal(m.Data, &g) != nil || g.Agent != agent || strings.TrimPrefix(m.Subject, prefix) != broker.GrantKey(agent, g.GrantID) {
			continue
		}
		if g.ActiveAt(now) {
			out = append(out, g)
		}
	}
	return out, nil
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func cmp64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
