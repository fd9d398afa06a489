package revoker_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/revoker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

const (
	agentA = "market-intel"
	agentB = "svc-price-optimizer"

	waitFor = 10 * time.Second
	tick    = 20 * time.Millisecond
)

// fixture is a broker with the example configuration and the deps a revoker
// is built from.
type fixture struct {
	env  *natstest.Env
	deps service.Deps
}

func setup(t *testing.T) *fixture {
	t.Helper()
	return setupAt(t, t.TempDir())
}

func setupAt(t *testing.T, dir string) *fixture {
	t.Helper()
	env := natstest.SetupAt(t, dir)
	var src *config.Source
	if _, err := env.Buckets.Config.Get(ctx(t), config.ActiveKey); err == nil {
		// A restarted broker keeps the configuration: follow it.
		wctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		src, err = config.Watch(wctx, env.Buckets.Config, env.Log)
		require.NoError(t, err)
	} else {
		yml, err := os.ReadFile("../../examples/jit.yaml")
		require.NoError(t, err)
		src = env.ApplyConfig(t, string(yml))
	}
	// As in production (service.Prepare): a suspension view.
	vctx, vcancel := context.WithCancel(context.Background())
	t.Cleanup(vcancel)
	view, err := broker.WatchSuspensions(vctx, env.Buckets.Suspensions, env.Log)
	require.NoError(t, err)
	return &fixture{env: env, deps: service.Deps{NC: env.NC, JS: env.JS, Buckets: env.Buckets, Config: src, Log: env.Log, Suspensions: view}}
}

// start runs a new revoker and stops it at cleanup.
func (f *fixture) start(t *testing.T) *revoker.Service {
	t.Helper()
	s := revoker.New(f.deps)
	require.NoError(t, s.Start(ctx(t)))
	t.Cleanup(s.Stop)
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// grant does what the approval service does: the lease (active), then the
// grant key with its TTL. It returns the key.
func (f *fixture) grant(t *testing.T, agent string, d time.Duration) (string, events.Grant) {
	t.Helper()
	reqID := events.NewID("req")
	now := time.Now().UTC()
	g := events.Grant{
		GrantID:     events.GrantIDFor(reqID),
		RequestID:   reqID,
		Agent:       agent,
		Permissions: []string{"data:write"},
		Reason:      "test",
		Mode:        events.ModeAutoApprove,
		ApprovedBy:  events.Actor{Kind: events.ActorRule, ID: "market-intel-write"},
		GrantedAt:   now,
		ExpiresAt:   now.Add(d),
		Status:      events.GrantActive,
	}
	key := broker.GrantKey(agent, g.GrantID)
	_, err := f.env.Buckets.Leases.Create(ctx(t), key, mustJSON(t, events.Lease{Grant: g, State: events.LeaseActive}))
	require.NoError(t, err)
	// Like approval: write the grant key only if it never existed. The
	// revoker may already have laid a tombstone there (a lease of a suspended
	// agent is revoked as soon as it appears), and that must win.
	_, err = broker.PutKeepTTL(ctx(t), f.env.JS, broker.BucketGrants, key, mustJSON(t, g), 0, broker.TTLFor(g.ExpiresAt, now))
	if !errors.Is(err, broker.ErrConflict) {
		require.NoError(t, err)
	}
	return key, g
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func (f *fixture) lease(t *testing.T, key string) events.Lease {
	t.Helper()
	var l events.Lease
	_, err := broker.GetJSON(ctx(t), f.env.Buckets.Leases, key, &l)
	require.NoError(t, err)
	return l
}

// grantValue returns the grant stored at key, or false if there is none.
func (f *fixture) grantValue(t *testing.T, key string) (events.Grant, bool) {
	t.Helper()
	var g events.Grant
	_, err := broker.GetJSON(ctx(t), f.env.Buckets.Grants, key, &g)
	if errors.Is(err, broker.ErrNotFound) {
		return g, false
	}
	require.NoError(t, err)
	return g, true
}

// stored returns the events on the audit stream matching filter, decoded,
// with their data as T.
func stored[T any](t *testing.T, f *fixture, filter string) ([]events.Event, []T) {
	t.Helper()
	var evs []events.Event
	var data []T
	for _, m := range f.env.AuditEvents(t, filter) {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		d, err := events.DataAs[T](e)
		require.NoError(t, err)
		evs = append(evs, e)
		data = append(data, d)
	}
	return evs, data
}

func revocations(t *testing.T, f *fixture) []events.Revocation {
	_, r := stored[events.Revocation](t, f, "jit.revoked.>")
	return r
}

func rejections(t *testing.T, f *fixture) []events.Rejection {
	_, r := stored[events.Rejection](t, f, "jit.rejected.>")
	return r
}

// revocationsOf returns the revocations of grantID.
func revocationsOf(t *testing.T, f *fixture, grantID string) []events.Revocation {
	var out []events.Revocation
	for _, r := range revocations(t, f) {
		if r.GrantID == grantID {
			out = append(out, r)
		}
	}
	return out
}

// waitMarkerHandled waits until key's TTL expiry marker is in the grants
// bucket's stream and the revoker-expiry consumer has acknowledged it, so a
// test can assert that it caused nothing more.
func (f *fixture) waitMarkerHandled(t *testing.T, key string) {
	t.Helper()
	st, err := f.env.JS.Stream(ctx(t), "KV_"+broker.BucketGrants)
	require.NoError(t, err)
	var markerSeq uint64
	require.Eventually(t, func() bool {
		m, err := st.GetLastMsgForSubject(ctx(t), "$KV."+broker.BucketGrants+"."+key)
		if err != nil || m.Header.Get(jetstream.MarkerReasonHeader) != "MaxAge" {
			return false
		}
		markerSeq = m.Sequence
		return true
	}, waitFor, tick, "no expiry marker for %s", key)
	require.Eventually(t, func() bool {
		c, err := f.env.JS.Consumer(ctx(t), "KV_"+broker.BucketGrants, revoker.DurableExpiry)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx(t))
		return err == nil && info.AckFloor.Stream >= markerSeq
	}, waitFor, tick, "marker of %s not acknowledged", key)
}

// waitGuardrailIdle waits until the guardrail consumer has acknowledged
// everything on its subjects.
func (f *fixture) waitGuardrailIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := f.env.JS.Consumer(ctx(t), broker.AuditStream, revoker.DurableGuardrail)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx(t))
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, waitFor, tick)
}

// fire publishes a guardrail.fired event about agent (on its subject) with
// data naming dataAgent, as a guardrail system would.
func (f *fixture) fire(t *testing.T, id, agent, dataAgent, rule string) events.Event {
	t.Helper()
	pub := broker.NewPublisher(f.env.JS, "guardrail-test")
	e, _, err := pub.Emit(ctx(t), id, events.TypeGuardrailFired, agent, events.GuardrailFired{
		Agent: dataAgent, Rule: rule, Detail: "price below floor", FiredAt: time.Now().UTC(),
	})
	require.NoError(t, err)
	return e
}

func apiErr(t *testing.T, err error) *broker.APIError {
	t.Helper()
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae)
	return ae
}

func done(t *testing.T, f *fixture, grantID string) (broker.ActionResult, error) {
	var out broker.ActionResult
	err := broker.Call(ctx(t), f.env.NC, broker.APIDone, "", broker.DoneInput{GrantID: grantID}, &out)
	return out, err
}

// reinstate calls the revoker's internal reinstate endpoint as the approval
// service does for the approver named approver ("" for an actor that is no
// approver).
func reinstate(t *testing.T, f *fixture, approver, agent string) (broker.ActionResult, error) {
	var out broker.ActionResult
	err := broker.Call(ctx(t), f.env.NC, broker.InternalReinstate, "",
		broker.Authorized[broker.ReinstateInput]{Input: broker.ReinstateInput{Agent: agent, Comment: "fixed"}, By: f.approver(t, approver)}, &out)
	return out, err
}

// approver is the actor the approval service names for approver name, from
// the configuration; "" is an agent, which no internal call may name.
func (f *fixture) approver(t *testing.T, name string) events.Actor {
	t.Helper()
	if name == "" {
		return events.Actor{Kind: events.ActorAgent, ID: agentA}
	}
	a, ok := f.deps.Config.Current().Approver(name)
	require.True(t, ok, name)
	return events.Actor{Kind: events.ActorApprover, ID: a.Name, Roles: a.Roles}
}

func (f *fixture) suspended(t *testing.T, agent string) (events.Suspension, bool) {
	t.Helper()
	var s events.Suspension
	_, err := broker.GetJSON(ctx(t), f.env.Buckets.Suspensions, agent, &s)
	if errors.Is(err, broker.ErrNotFound) {
		return s, false
	}
	require.NoError(t, err)
	return s, true
}
