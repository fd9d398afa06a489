package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The attack suite: every attack of issue 9, and its neighbours, tried with
// each non-service principal's own credential against a real jitd. Each
// attack must be refused — nothing happens (a raw write lands in the
// attacker's own account, a JetStream request finds no responder) or a
// service answers 4xx and records a jit.rejected — and nothing may change:
// no grant, no suspension, no configuration, no consumer, no event but the
// refusal's own.

const (
	agentA = "market-intel"
	agentB = "svc-price-optimizer"
	victim = "victim-bot" // suspended at the start
)

// attackConfig is the example configuration with a third agent (suspended
// in the tests) and a second guardrail source that watches market-intel
// only.
func attackConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(exampleConfig(t))
	require.NoError(t, err)
	yml := strings.Replace(string(b), "agents:\n", "agents:\n  - id: "+victim+"\n    owner: intel-team\n    base: [data:read]\n    eligible: [data:write]\n    max_jit_duration: 60m\n", 1)
	src := "    agents: [market-intel, svc-price-optimizer]\n"
	require.Contains(t, yml, src)
	yml = strings.Replace(yml, src, "    agents: [market-intel, svc-price-optimizer, "+victim+"]\n  - name: narrow-guard\n    guardrails: [price-floor]\n    agents: ["+agentA+"]\n", 1)
	p := filepath.Join(t.TempDir(), "jit.yaml")
	require.NoError(t, os.WriteFile(p, []byte(yml), 0o600))
	return p
}

// siege is a running jitd and what the attacks need of it.
type siege struct {
	t       *testing.T
	url     string
	dataDir string
	app     *allinone.App
	admin   jetstream.JetStream
	// grantA is a live grant of market-intel; pendingB a request of
	// svc-price-optimizer waiting for a human.
	grantA, pendingB string
}

func startSiege(t *testing.T) *siege {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s := &siege{t: t, dataDir: dir}
	s.start(attackConfig(t))
	c := cli{t: t, bin: bins(t), url: s.url}
	r := c.run("request", "--agent", agentA, "--perm", "data:write", "--duration", "50m", "--reason", "live grant", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	s.grantA = r.JSON(t)["grant_id"].(string)
	wait := c.background("request", "--agent", agentB, "--perm", "integrations:write", "--duration", "10m", "--reason", "waits for a human", "--json", "--timeout", "60s")
	_ = wait // ended (killed) at cleanup
	waitFor(t, "pending", 10*time.Second, func() bool {
		for _, l := range c.as("dev-alice").run("pending", "--json").JSONLines(t) {
			s.pendingB, _ = l["request_id"].(string)
			return s.pendingB != ""
		}
		return false
	})
	require.Equal(t, 0, c.run("guardrail", "fire", "--agent", victim, "--rule", "price-floor", "--source", "pricing-guard").Code)
	waitFor(t, "victim suspended", 10*time.Second, func() bool { _, ok := s.snapshot().susp[victim]; return ok })
	s.quiet()
	return s
}

// start runs jitd on the siege's data directory (config may be "").
func (s *siege) start(config string) {
	s.t.Helper()
	app := allinone.New(allinone.Options{ConfigFile: config, DataDir: s.dataDir, NATSListen: "127.0.0.1:-1",
		CheckpointInterval: time.Hour}, natstest.Logger(s.t))
	require.NoError(s.t, app.Run(context.Background()))
	s.t.Cleanup(app.Close)
	s.app, s.url = app, app.NATSURL()
	register(s.t, s.url, filepath.Join(s.dataDir, "keys"), app.CredsDir())
	js, err := jetstream.New(adminConnect(s.t, s.url))
	require.NoError(s.t, err)
	s.admin = js
}

// snap is what an attack must not change.
type snap struct {
	lastSeq   uint64
	grants    map[string]string // key → hash of value
	leases    map[string]string
	susp      map[string]string
	pending   map[string]string
	config    string
	secrets   string
	consumers map[string][]string // stream → consumer names
}

func (s *siege) snapshot() snap {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := snap{consumers: map[string][]string{}}
	st, err := s.admin.Stream(ctx, broker.AuditStream)
	require.NoError(s.t, err)
	out.lastSeq = st.CachedInfo().State.LastSeq
	bucket := func(name string) map[string]string {
		kv, err := s.admin.KeyValue(ctx, name)
		require.NoError(s.t, err)
		m := map[string]string{}
		lister, err := kv.ListKeys(ctx)
		require.NoError(s.t, err)
		for k := range lister.Keys() {
			e, err := kv.Get(ctx, k)
			if err != nil {
				continue
			}
			sum := sha256.Sum256(e.Value())
			m[k] = hex.EncodeToString(sum[:8])
		}
		return m
	}
	out.grants, out.leases, out.susp, out.pending = bucket(broker.BucketGrants), bucket(broker.BucketLeases), bucket(broker.BucketSuspensions), bucket(broker.BucketPending)
	out.config = bucket(broker.BucketConfig)["active"]
	out.secrets = bucket(broker.BucketSecrets)["active"]
	for _, name := range []string{broker.AuditStream, "KV_" + broker.BucketGrants, "KV_" + broker.BucketPending} {
		st, err := s.admin.Stream(ctx, name)
		require.NoError(s.t, err)
		for n := range st.ConsumerNames(ctx).Name() {
			out.consumers[name] = append(out.consumers[name], n)
		}
		slices.Sort(out.consumers[name])
	}
	return out
}

// quiet waits until the stream has stopped growing (the set-up's events
// are all in).
func (s *siege) quiet() {
	s.t.Helper()
	last := s.snapshot().lastSeq
	for stable := 0; stable < 5; {
		time.Sleep(50 * time.Millisecond) // sampling the stream, not synchronising with it
		now := s.snapshot().lastSeq
		if now == last {
			stable++
		} else {
			stable, last = 0, now
		}
	}
}

// unchanged asserts that nothing but want new jit.rejected events (of the
// given codes, in order) reached the stream since before, and that no
// state changed.
func (s *siege) unchanged(what string, before snap, codes ...string) {
	s.t.Helper()
	var after snap
	var added []events.Event
	// A refusal's event may follow its answer by a moment.
	require.Eventually(s.t, func() bool {
		after = s.snapshot()
		added = s.eventsAfter(before.lastSeq)
		return len(added) >= len(codes)
	}, 10*time.Second, 20*time.Millisecond, "%s: the refusals' events", what)
	s.quiet()
	after = s.snapshot()
	added = s.eventsAfter(before.lastSeq)
	got := make([]string, 0, len(added))
	for _, e := range added {
		if e.Type() != events.TypeRejected {
			got = append(got, e.Type()+" "+e.ID())
			continue
		}
		r, err := events.DataAs[events.Rejection](e)
		require.NoError(s.t, err)
		require.NotEmpty(s.t, r.Stage, "%s: every refusal names its stage: %+v", what, r)
		got = append(got, r.Code)
	}
	require.Equal(s.t, append([]string{}, codes...), got, "%s: the only new events are the refusals'", what)
	before.lastSeq, after.lastSeq = 0, 0
	require.Equal(s.t, before, after, "%s: nothing changed", what)
}

func (s *siege) eventsAfter(seq uint64) []events.Event {
	s.t.Helper()
	var out []events.Event
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := broker.ReadDirect(ctx, s.admin.Conn(), broker.AuditStream, broker.DirectRead{FromSeq: seq + 1}, func(m broker.StoredMsg) error {
		if m.Seq <= seq {
			return nil
		}
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(s.t, err, "seq %d", m.Seq)
		out = append(out, e)
		return nil
	})
	require.NoError(s.t, err)
	return out
}

// as connects as principal p with its credential.
func (s *siege) as(p auth.Principal) *nats.Conn {
	s.t.Helper()
	return connectAs(s.t, s.url, p)
}

var (
	pA         = auth.Principal{Kind: auth.KindAgent, ID: agentA}
	pB         = auth.Principal{Kind: auth.KindAgent, ID: agentB}
	pGuard     = auth.Principal{Kind: auth.KindGuardrail, ID: "pricing-guard"}
	pNarrow    = auth.Principal{Kind: auth.KindGuardrail, ID: "narrow-guard"}
	principals = []auth.Principal{pA, pB, pGuard, pNarrow, auth.DefaultChecker, auth.DefaultSIEM, auth.DefaultOperator}
)

// request sends data to subject and returns the answer, or the error
// (no responders, a timeout) when nothing answers.
func request(nc *nats.Conn, subject, reply string, data []byte, hdr nats.Header) (*nats.Msg, error) {
	m := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	if reply == "" {
		return nc.RequestMsg(m, 2*time.Second)
	}
	m.Reply = reply
	return nil, nc.PublishMsg(m)
}

// TestAttacksOnState: raw writes into the buckets and the stream, and every
// JetStream API call that deletes, purges, edits, creates or steals, with
// each client principal's credential.
func TestAttacksOnState(t *testing.T) {
	s := startSiege(t)
	future := events.Grant{GrantID: "grt_evil", RequestID: "req_evil", Agent: agentA, Permissions: []string{"data:delete"},
		Mode: events.ModeHuman, GrantedAt: time.Now(), ExpiresAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Status: events.GrantActive}
	grantJSON, _ := json.Marshal(future)
	decided, _ := events.New(events.DecisionEventID("req_future", "human"), events.TypeDecided, "/jit/approval", agentA,
		events.Decision{RequestID: "req_future", Agent: agentA, Outcome: events.OutcomeApproved, Mode: events.ModeHuman, Reason: "forged",
			Permissions: []string{"data:write"}, DurationMS: 86_400_000, DecidedBy: events.Actor{Kind: events.ActorApprover, ID: "alice"}, DecidedAt: time.Now()})
	decidedJSON, _ := events.Encode(decided)
	cfgJSON := []byte(`{"timezone":"UTC","agents":[],"rules":[{"name":"all","permissions":["*"],"mode":"auto-approve"}]}`)
	del := nats.Header{"KV-Operation": []string{"DEL"}}
	pushConsumer := []byte(`{"stream_name":"JIT_AUDIT","config":{"name":"evil","deliver_subject":"$KV.jit_suspensions.` + agentA + `","ack_policy":"none"}}`)

	for _, p := range principals {
		t.Run(p.String(), func(t *testing.T) {
			nc := s.as(p)
			before := s.snapshot()
			// Raw writes: into a client principal's own account, where
			// nothing of the services' is.
			for _, w := range []struct {
				subject string
				data    []byte
				hdr     nats.Header
			}{
				{"$KV.jit_grants." + agentA + ".grt_evil", grantJSON, nil},
				{"$KV.jit_leases." + agentA + "." + s.grantA, []byte(`{"state":"revoked"}`), nil},
				{"$KV.jit_suspensions." + victim, nil, del},
				{"$KV.jit_config.active", cfgJSON, nil},
				{"$KV.jit_secrets.active", cfgJSON, nil},
				{"jit.decided." + agentA, decidedJSON, nats.Header{"Nats-Msg-Id": []string{decided.ID()}}},
				{"jit.granted." + agentA, decidedJSON, nats.Header{"Nats-Msg-Id": []string{events.GrantedEventID("grt_future")}}},
				{"jit.revoked." + agentA, decidedJSON, nats.Header{"Nats-Msg-Id": []string{events.RevokedEventID(s.grantA)}}},
				{"jitint.revoker.reinstate", []byte(`{"input":{"agent":"` + victim + `"},"by":{"kind":"approver","id":"alice","roles":["security-admin"]}}`), nil},
				{"jitint.policy.config.apply", []byte(`{"input":{"source":"x","yaml":"timezone: UTC"},"by":{"kind":"approver","id":"alice","roles":["security-admin"]}}`), nil},
			} {
				require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: w.subject, Data: w.data, Header: w.hdr}))
			}
			require.NoError(t, nc.Flush())
			// JetStream API calls, with the server's own prefix and the
			// clients' read prefix: none may reach a deleting, purging,
			// editing or consumer-making endpoint of the services'
			// account.
			for _, prefix := range []string{"$JS.API", auth.JSPrefix} {
				for _, c := range []struct {
					api  string
					body []byte
				}{
					{"STREAM.DELETE." + broker.AuditStream, nil},
					{"STREAM.PURGE." + broker.AuditStream, nil},
					{"STREAM.MSG.DELETE." + broker.AuditStream, []byte(`{"seq":1}`)},
					{"STREAM.UPDATE." + broker.AuditStream, []byte(`{"name":"JIT_AUDIT","subjects":["nothing.>"]}`)},
					{"STREAM.DELETE.KV_" + broker.BucketGrants, nil},
					{"STREAM.PURGE.KV_" + broker.BucketSuspensions, nil},
					{"CONSUMER.DELETE." + broker.AuditStream + ".revoker-guardrail", nil},
					{"CONSUMER.DELETE.KV_" + broker.BucketGrants + ".revoker-expiry", nil},
					{"CONSUMER.DELETE." + broker.AuditStream + "." + auth.DefaultSIEM.AuditDurable(), nil},
					{"CONSUMER.CREATE." + broker.AuditStream + ".evil", pushConsumer},
					{"CONSUMER.MSG.NEXT." + broker.AuditStream + ".revoker-guardrail", []byte(`{"batch":10,"expires":500000000}`)},
					{"DIRECT.GET.KV_" + broker.BucketSecrets, []byte(`{"seq":1,"batch":10}`)},
					{"DIRECT.GET.KV_" + broker.BucketLeases, []byte(`{"seq":1,"batch":10}`)},
				} {
					m, err := request(nc, prefix+"."+c.api, "", c.body, nil)
					if err == nil {
						// An answer must be a refusal.
						require.Contains(t, string(m.Data), `"error"`, "%s %s answered: %s", p, c.api, m.Data)
					}
				}
			}
			// A reply subject aimed into the services' buckets: the answer
			// stays in the caller's account.
			_, err := request(nc, broker.APIDone, "$KV.jit_suspensions."+agentA, []byte(`{"grant_id":"grt_x"}`), nil)
			require.NoError(t, err)
			require.NoError(t, nc.Flush())
			codes := []string{}
			if p.Kind == auth.KindAgent {
				codes = append(codes, events.CodeNotFound) // done of an unknown grant, its own call
			}
			s.unchanged(p.String(), before, codes...)
		})
	}
	// The checker still refuses the forged grant, and the victim is still
	// suspended.
	c := cli{t: t, bin: bins(t), url: s.url}
	require.Equal(t, 1, c.run("check", "--agent", agentA, "--perm", "data:delete").Code)
	require.Equal(t, 1, c.run("check", "--agent", victim, "--perm", "data:read").Code)
	require.Equal(t, 0, c.run("check", "--agent", agentA, "--perm", "data:write").Code, "the live grant is untouched")
}

// TestAttacksAdminCannotPurgeTheTrail: even the break-glass credential
// cannot delete or purge an event of the audit stream.
func TestAttacksAdminCannotPurgeTheTrail(t *testing.T) {
	s := startSiege(t)
	before := s.snapshot()
	st, err := s.admin.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	require.ErrorContains(t, st.DeleteMsg(t.Context(), 2), "not permitted")
	require.Error(t, st.Purge(t.Context()))
	cfg := st.CachedInfo().Config
	require.True(t, cfg.DenyDelete)
	require.True(t, cfg.DenyPurge)
	require.Equal(t, int32(1<<20), cfg.MaxMsgSize)
	cfg.DenyDelete, cfg.DenyPurge = false, false
	_, err = s.admin.UpdateStream(t.Context(), cfg)
	require.Error(t, err, "deny_delete and deny_purge cannot be turned off")
	s.unchanged("administrator", before)
}

// TestAttacksNoEavesdropping: no client principal sees another's traffic:
// an approver's token on the bus, another agent's replies or events.
func TestAttacksNoEavesdropping(t *testing.T) {
	s := startSiege(t)
	var mu sync.Mutex
	var seen []string
	for _, p := range principals {
		if p == auth.DefaultOperator {
			continue
		}
		nc := s.as(p)
		for _, subj := range []string{">", "jitapi.>", "_INBOX.>", "$SRV.>"} {
			_, err := nc.Subscribe(subj, func(m *nats.Msg) {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s got %s %s %s", p, m.Subject, m.Header, m.Data))
				mu.Unlock()
			})
			require.NoError(t, err)
		}
		require.NoError(t, nc.Flush())
	}
	op := s.as(auth.DefaultOperator)
	var list broker.PendingList
	require.NoError(t, broker.Call(t.Context(), op, broker.APIPending, "dev-alice", struct{}{}, &list))
	require.NotEmpty(t, list.Pending)
	var res broker.ActionResult
	err := broker.Call(t.Context(), op, broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: s.pendingB, Comment: "ok"}, &res)
	require.NoError(t, err)
	// Round trips on every sniffer's connection: what was sent is in.
	for _, p := range principals {
		require.NoError(t, connectAs(t, s.url, p).Flush())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range seen {
		require.NotContains(t, l, "dev-alice", "a token on the bus")
		require.NotContains(t, l, "Jit-Token")
		require.NotContains(t, l, `{"pending":[`, "another principal's reply")
	}
}

// TestAttacksImpersonation: an agent acting as another, and a guardrail
// source out of its rights: each refused with 4xx and audited; nothing
// else happens.
func TestAttacksImpersonation(t *testing.T) {
	s := startSiege(t)
	b := s.as(pB)
	call := func(nc *nats.Conn, subject string, in any) *broker.APIError {
		t.Helper()
		err := broker.Call(t.Context(), nc, subject, "", in, nil)
		var ae *broker.APIError
		require.ErrorAs(t, err, &ae, "%s must be refused", subject)
		return ae
	}

	before := s.snapshot()
	ae := call(b, broker.APIRequest, broker.RequestInput{Agent: agentA, Permissions: []string{"data:write"}, Duration: "10m", Reason: "as A"})
	require.Equal(t, 403, ae.Status)
	ae = call(b, broker.APIDone, broker.DoneInput{GrantID: s.grantA})
	require.Equal(t, 403, ae.Status)
	ae = call(b, broker.APIEvents, broker.EventsInput{Agent: agentA})
	require.Equal(t, 403, ae.Status)
	ae = call(b, broker.APIGrants, broker.GrantsInput{Agent: agentA})
	require.Equal(t, 403, ae.Status)
	s.unchanged("agent B as agent A", before, events.CodeForbidden, events.CodeForbidden, events.CodeForbidden, events.CodeForbidden)
	rej := s.eventsAfter(before.lastSeq)
	for _, e := range rej {
		r, err := events.DataAs[events.Rejection](e)
		require.NoError(t, err)
		require.Equal(t, events.Actor{Kind: events.ActorAgent, ID: agentB}, r.Actor, "who tried is recorded")
	}

	// The subjects on which the agents' calls arrive in the services'
	// account cannot be reached from an agent's account: its import maps
	// only its own calls there.
	for _, subject := range []string{broker.AgentSubject(agentA, broker.APIRequest), broker.AgentSubject(agentB, broker.APIRequest)} {
		_, err := b.Request(subject, []byte(`{}`), time.Second)
		require.ErrorIs(t, err, nats.ErrNoResponders, subject)
	}

	// Withdrawing another agent's request withdraws nothing of that agent's:
	// the request stays pending.
	var out broker.ActionResult
	require.NoError(t, broker.Call(t.Context(), b, broker.APIWithdraw, "", broker.WithdrawInput{RequestID: "req_of_a"}, &out))
	require.Equal(t, agentB, out.Agent)

	// An agent may not call the approvers' API, nor fire a guardrail.
	a := s.as(pA)
	_, err := a.Request(broker.APIPending, []byte(`{}`), time.Second)
	require.ErrorIs(t, err, nats.ErrNoResponders)
	ajs, err := jetstream.New(a)
	require.NoError(t, err)
	before = s.snapshot()
	_, err = ajs.PublishMsg(t.Context(), guardrailMsg(t, "agent-fire", agentB, "price-floor", "1.0"))
	require.Error(t, err, "no guardrail ingress for an agent")
	// A guardrail source: out of its agents (no route at all), a rule not
	// its own, CloudEvents 0.3, not a CloudEvent.
	njs, err := jetstream.New(s.as(pNarrow))
	require.NoError(t, err)
	_, err = njs.PublishMsg(t.Context(), guardrailMsg(t, "narrow-b", agentB, "price-floor", "1.0"))
	require.Error(t, err, "narrow-guard may not report on "+agentB)
	gjs, err := jetstream.New(s.as(pGuard))
	require.NoError(t, err)
	for _, m := range []*nats.Msg{
		guardrailMsg(t, "other-rule", agentA, "not-configured", "1.0"),
		guardrailMsg(t, "old-spec", agentA, "price-floor", "0.3"),
		{Subject: "guardrail.fired." + agentA, Data: []byte("not a cloudevent")},
		{Subject: "guardrail.fired." + agentA, Data: []byte(`{"price":0.4}`)},
		{Subject: "guardrail.fired." + agentA, Data: []byte("{}")},
	} {
		_, err := gjs.PublishMsg(t.Context(), m)
		var ae *jetstream.APIError
		require.ErrorAs(t, err, &ae, "%s refused", m.Data)
		require.GreaterOrEqual(t, ae.Code, 400)
	}
	s.unchanged("guardrails out of their rights", before,
		events.CodeMalformed, events.CodeMalformed, events.CodeMalformed, events.CodeMalformed, events.CodeMalformed)

	// Three garbage fires did not count for repeat-offenders: market-intel
	// still gets its auto-approved grant.
	c := cli{t: t, bin: bins(t), url: s.url}
	r := c.run("request", "--agent", agentA, "--perm", "data:write", "--duration", "5m", "--reason", "after garbage", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)

	// A request id reused by another agent, or with another body: 409.
	require.NoError(t, broker.Call(t.Context(), a, broker.APIRequest, "", broker.RequestInput{RequestID: "req-shared",
		Permissions: []string{"data:write"}, Duration: "5m", Reason: "first"}, nil))
	ae = call(b, broker.APIRequest, broker.RequestInput{RequestID: "req-shared", Permissions: []string{"data:write"}, Duration: "5m", Reason: "first"})
	require.Equal(t, 409, ae.Status)
	ae = call(a, broker.APIRequest, broker.RequestInput{RequestID: "req-shared", Permissions: []string{"data:write"}, Duration: "6m", Reason: "first"})
	require.Equal(t, 409, ae.Status)
	require.NoError(t, broker.Call(t.Context(), a, broker.APIRequest, "", broker.RequestInput{RequestID: "req-shared",
		Permissions: []string{"data:write"}, Duration: "5m", Reason: "first"}, nil), "a true retry is fine")

	// An outside id that equals a service's derived id cannot suppress the
	// service's event: the ingress stores it under its own namespace.
	_, err = gjs.PublishMsg(t.Context(), guardrailMsg(t, "req-future", victim, "price-floor", "1.0"))
	require.NoError(t, err)
	var acc broker.RequestAccepted
	require.NoError(t, broker.Call(t.Context(), b, broker.APIRequest, "", broker.RequestInput{RequestID: "req-future",
		Permissions: []string{"data:write"}, Duration: "5m", Reason: "after the guardrail"}, &acc))
	waitFor(t, "the request is stored, not taken for a duplicate", 10*time.Second, func() bool {
		for _, e := range audit(t, s.url, "jit.requested."+agentB) {
			if e.ID() == "req-future" {
				return true
			}
		}
		return false
	})
	var fired []string
	for _, e := range audit(t, s.url, "guardrail.fired."+victim) {
		fired = append(fired, e.ID())
	}
	require.Contains(t, fired, "gr/pricing-guard/req-future", "stored under the source's namespace")
}

// guardrailMsg is a guardrail.fired CloudEvent of spec version spec.
func guardrailMsg(t *testing.T, id, agent, rule, spec string) *nats.Msg {
	t.Helper()
	body := fmt.Sprintf(`{"specversion":%q,"id":%q,"source":"/attack","type":"guardrail.fired","datacontenttype":"application/json",`+
		`"data":{"agent":%q,"rule":%q,"detail":"x","fired_at":%q}}`, spec, id, agent, rule, time.Now().UTC().Format(time.RFC3339))
	m := nats.NewMsg("guardrail.fired." + agent)
	m.Data = []byte(body)
	m.Header.Set("Content-Type", events.ContentType)
	return m
}

// TestAttacksTokenGuessing: an operator's credential guessing approver
// tokens is locked out after ten wrong ones, the right token included, and
// the lockout is audited once.
func TestAttacksTokenGuessing(t *testing.T) {
	s := startSiege(t)
	op := s.as(auth.DefaultOperator)
	before := s.snapshot()
	for i := range 10 {
		err := broker.Call(t.Context(), op, broker.APIPending, fmt.Sprintf("guess-%d", i), struct{}{}, nil)
		var ae *broker.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, 401, ae.Status)
	}
	err := broker.Call(t.Context(), op, broker.APIPending, "dev-alice", struct{}{}, nil)
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 429, ae.Status, "locked out, valid token or not")
	codes := slices.Repeat([]string{events.CodeUnauthenticated}, 9)
	codes = append(codes, events.CodeRateLimited, events.CodeUnauthenticated, events.CodeRateLimited)
	s.unchanged("token guessing", before, codes...)
	// Another operator's credential is not locked out.
	c := cli{t: t, bin: bins(t), url: s.url}
	require.Equal(t, 0, c.run("creds", "issue", "operator", "ops2", "--data-dir", s.dataDir).Code)
	require.NoError(t, broker.Call(t.Context(), s.as(auth.Principal{Kind: auth.KindOperator, ID: "ops2"}), broker.APIPending, "dev-alice", struct{}{}, nil))
}

// TestAttacksCredentials: a connection without a credential is refused, and
// a revoked principal is cut off at once, its live connections closed,
// without restarting anything.
func TestAttacksCredentials(t *testing.T) {
	s := startSiege(t)
	_, err := nats.Connect(s.url)
	require.ErrorContains(t, err, "Authorization Violation")

	closed := make(chan struct{})
	live, err := nats.Connect(s.url, nats.UserCredentials(filepath.Join(s.app.CredsDir(), pB.CredsFile())),
		nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	require.NoError(t, err)
	defer live.Close()
	other := s.as(pA)

	c := cli{t: t, bin: bins(t), url: s.url}
	r := c.run("creds", "revoke", "agent", agentB, "--data-dir", s.dataDir)
	require.Equal(t, 0, r.Code, r.Stderr)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent's live connection stays open")
	}
	_, err = nats.Connect(s.url, nats.UserCredentials(filepath.Join(s.app.CredsDir(), pB.CredsFile())))
	require.Error(t, err, "a revoked credential cannot connect")
	require.NoError(t, other.Flush(), "other principals are not affected")

	// A new credential works again.
	r = c.run("creds", "issue", "agent", agentB, "--data-dir", s.dataDir)
	require.Equal(t, 0, r.Code, r.Stderr)
	nc, err := nats.Connect(s.url, nats.UserCredentials(filepath.Join(s.app.CredsDir(), pB.CredsFile())))
	require.NoError(t, err)
	nc.Close()
}

// TestAttacksCorruptRecords: garbage in any bucket never stops a start; the
// undecodable record is reported and the rest proceeds.
func TestAttacksCorruptRecords(t *testing.T) {
	s := startSiege(t)
	ctx := t.Context()
	for _, kv := range []struct{ bucket, key string }{
		{broker.BucketPending, agentB + ".req_garbage"},
		{broker.BucketLeases, agentA + ".grt_garbage"},
		{broker.BucketGrants, agentA + ".grt_garbage"},
		{broker.BucketSuspensions, "nobody"},
	} {
		b, err := s.admin.KeyValue(ctx, kv.bucket)
		require.NoError(t, err)
		_, err = b.Put(ctx, kv.key, []byte("\x00not json"))
		require.NoError(t, err)
	}
	s.app.Close()
	s.start("")
	c := cli{t: t, bin: bins(t), url: s.url}
	r := c.run("request", "--agent", agentA, "--perm", "data:write", "--duration", "5m", "--reason", "after the garbage", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	waitFor(t, "the records set aside are reported", 10*time.Second, func() bool {
		n := 0
		for _, e := range audit(t, s.url, "jit.rejected.>") {
			if r, err := events.DataAs[events.Rejection](e); err == nil && r.Stage == events.StageRecord {
				n++
			}
		}
		return n >= 2 // the pending record and the lease
	})
	require.Equal(t, 1, c.run("check", "--agent", agentA, "--perm", "data:delete").Code)
}

// TestAttacksByACompromisedService: a service's own credential, in the
// hands of an attacker, still cannot reshape the topology: no stream's or
// bucket's configuration changes (the audit trail cut short, the secrets
// republished to readers), no other service's durable is recreated with
// another filter or reset, nothing is deleted or purged.
func TestAttacksByACompromisedService(t *testing.T) {
	s := startSiege(t)
	ctx := t.Context()
	store, err := auth.OpenStore(filepath.Join(s.dataDir, "keys"))
	require.NoError(t, err)
	configs := func() map[string]jetstream.StreamConfig {
		out := map[string]jetstream.StreamConfig{}
		for _, name := range []string{broker.AuditStream, "KV_" + broker.BucketGrants, "KV_" + broker.BucketLeases,
			"KV_" + broker.BucketSuspensions, "KV_" + broker.BucketPending, "KV_" + broker.BucketConfig, "KV_" + broker.BucketSecrets} {
			st, err := s.admin.Stream(ctx, name)
			require.NoError(t, err)
			out[name] = st.CachedInfo().Config
		}
		return out
	}
	durable := func(stream, name string) jetstream.ConsumerConfig {
		c, err := s.admin.Consumer(ctx, stream, name)
		require.NoError(t, err)
		return c.CachedInfo().Config
	}
	cut, _ := json.Marshal(jetstream.StreamConfig{Name: broker.AuditStream, Subjects: broker.AuditSubjects, MaxMsgs: 2,
		Storage: jetstream.FileStorage, DenyDelete: true, DenyPurge: true, AllowDirect: true, MaxMsgSize: 1 << 20, Duplicates: 10 * time.Minute})
	leak, _ := json.Marshal(jetstream.StreamConfig{Name: "KV_" + broker.BucketSecrets, Subjects: []string{"$KV." + broker.BucketSecrets + ".>"},
		RePublish: &jetstream.RePublish{Source: ">", Destination: "jitkv.jit_secrets.>"}})
	skip, _ := json.Marshal(map[string]any{"seq": 1 << 40})

	for _, name := range []string{auth.ServiceRequester, auth.ServicePolicy, auth.ServiceApproval, auth.ServiceRevoker, auth.ServiceAuditor} {
		t.Run(name, func(t *testing.T) {
			// Another service's durable to blind.
			victim := "revoker-guardrail"
			if name == auth.ServiceRevoker {
				victim = "approval"
			}
			blind, _ := json.Marshal(map[string]any{"stream_name": broker.AuditStream, "config": map[string]any{
				"durable_name": victim, "filter_subject": "nothing.>", "ack_policy": "explicit"}})
			is, err := store.Ephemeral(auth.Service(name))
			require.NoError(t, err)
			opts, err := is.Options()
			require.NoError(t, err)
			nc, err := nats.Connect(s.url, opts...)
			require.NoError(t, err)
			defer nc.Close()
			before, guard := configs(), durable(broker.AuditStream, victim)
			var wg sync.WaitGroup
			for _, c := range []struct {
				api  string
				body []byte
			}{
				{"STREAM.UPDATE." + broker.AuditStream, cut},
				{"STREAM.UPDATE.KV_" + broker.BucketSecrets, leak},
				{"STREAM.DELETE." + broker.AuditStream, nil},
				{"STREAM.PURGE.KV_" + broker.BucketGrants, nil},
				{"STREAM.MSG.DELETE." + broker.AuditStream, []byte(`{"seq":1}`)},
				{"CONSUMER.CREATE." + broker.AuditStream + "." + victim, blind},
				{"CONSUMER.DURABLE.CREATE." + broker.AuditStream + "." + victim, blind},
				{"CONSUMER.RESET." + broker.AuditStream + "." + victim, skip},
				{"CONSUMER.DELETE." + broker.AuditStream + "." + victim, nil},
				{"CONSUMER.DELETE.KV_" + broker.BucketGrants + ".revoker-expiry", nil},
			} {
				// At once: a refused request waits out its timeout.
				wg.Go(func() {
					m, err := request(nc, "$JS.API."+c.api, "", c.body, nil)
					if err == nil {
						assert.Contains(t, string(m.Data), `"error"`, "%s %s answered: %s", name, c.api, m.Data)
					}
				})
			}
			wg.Wait()
			require.Equal(t, before, configs(), "%s: no stream or bucket changed", name)
			require.Equal(t, guard, durable(broker.AuditStream, victim), "%s: %s's durable is untouched", name, victim)
		})
	}
}

// TestPolicyHistoryIsThePolicyServicesAlone: the policy service's history
// snapshots (jit_policy_history) are written and read by its credential
// only: another service's own credential can neither forge a snapshot
// (which would make a restarted policy count a history that never was) nor
// read one.
func TestPolicyHistoryIsThePolicyServicesAlone(t *testing.T) {
	s := startSiege(t)
	store, err := auth.OpenStore(filepath.Join(s.dataDir, "keys"))
	require.NoError(t, err)
	conn := func(name string) *nats.Conn {
		is, err := store.Ephemeral(auth.Service(name))
		require.NoError(t, err)
		opts, err := is.Options()
		require.NoError(t, err)
		nc, err := nats.Connect(s.url, opts...)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	forged := []byte(`{"through":1,"saved_at":"2026-11-30T00:00:00Z"}`)
	subject := func(key string) string { return "$KV." + broker.BucketPolicyHistory + "." + key }
	kv, err := s.admin.KeyValue(t.Context(), broker.BucketPolicyHistory)
	require.NoError(t, err)

	// The policy service's own credential may write (and so there is a
	// key to read).
	m, err := request(conn(auth.ServicePolicy), subject("meta-test"), "", forged, nil)
	require.NoError(t, err)
	require.NotContains(t, string(m.Data), `"error"`)
	e, err := kv.Get(t.Context(), "meta-test")
	require.NoError(t, err)
	require.Equal(t, forged, e.Value())

	// Refused: a permission violation gets no answer at all.
	get := "$JS.API.DIRECT.GET.KV_" + broker.BucketPolicyHistory + "." + subject("meta-test")
	var wg sync.WaitGroup
	for _, name := range []string{auth.ServiceRequester, auth.ServiceApproval, auth.ServiceRevoker, auth.ServiceAuditor} {
		nc := conn(name)
		wg.Go(func() {
			_, err := request(nc, subject("forged"), "", forged, nil)
			assert.Error(t, err, "%s wrote a policy snapshot", name)
			_, err = request(nc, get, "", nil, nil)
			assert.Error(t, err, "%s read a policy snapshot", name)
		})
	}
	wg.Wait()
	_, err = kv.Get(t.Context(), "forged")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "no other service's write is stored")
}
