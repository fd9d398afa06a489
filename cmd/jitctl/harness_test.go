package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a real broker with the JIT topology, and fakes of the JIT
// services' API endpoints that answer over real NATS.
type harness struct {
	t     *testing.T
	env   *natstest.Env
	pub   *broker.Publisher
	vars  map[string]string
	ctx   context.Context
	calls chan call
}

// call is what a fake endpoint received.
type call struct {
	subject, token string
	body           []byte
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	env := natstest.Setup(t)
	return &harness{
		t: t, env: env, pub: broker.NewPublisher(env.JS, "fake"),
		vars:  map[string]string{"NATS_URL": env.Server.ClientURL()},
		ctx:   t.Context(),
		calls: make(chan call, 16),
	}
}

func (h *harness) getenv(k string) string { return h.vars[k] }

// applyExampleConfig stores examples/jit.yaml as the active configuration.
func (h *harness) applyExampleConfig() {
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(h.t, err)
	h.env.ApplyConfig(h.t, string(yml))
}

// result of one jitctl run.
type result struct {
	code           int
	stdout, stderr string
}

// lines returns stdout's JSON lines decoded.
func (r result) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "line %q", l)
		out = append(out, m)
	}
	return out
}

func (h *harness) run(args ...string) result {
	h.t.Helper()
	var stdout, stderr syncBuffer
	code := run(h.ctx, args, &stdout, &stderr, h.getenv)
	return result{code, stdout.String(), stderr.String()}
}

// start runs jitctl in the background; wait returns its result.
func (h *harness) start(args ...string) (stdout *syncBuffer, wait func() result) {
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(h.ctx, args, &out, &errb, h.getenv) }()
	h.t.Cleanup(func() {
		if h.t.Failed() {
			h.t.Logf("background jitctl %v: stdout %q stderr %q", args, out.String(), errb.String())
		}
	})
	return &out, func() result {
		select {
		case code := <-done:
			return result{code, out.String(), errb.String()}
		case <-time.After(20 * time.Second):
			h.t.Fatalf("jitctl %v did not finish; stdout %q stderr %q", args, out.String(), errb.String())
			return result{}
		}
	}
}

// serve adds a micro service answering subject with handle, as the JIT
// services do (broker.Respond), and records every call.
func (h *harness) serve(subject string, handle func(c call) (any, error)) {
	h.t.Helper()
	svc, err := micro.AddService(h.env.NC, micro.Config{Name: "fake", Version: "0.0.1"})
	require.NoError(h.t, err)
	h.t.Cleanup(func() { _ = svc.Stop() })
	err = svc.AddEndpoint(strings.ReplaceAll(subject, ".", "-"), micro.HandlerFunc(func(req micro.Request) {
		c := call{subject: req.Subject(), token: req.Headers().Get(broker.HeaderToken), body: append([]byte(nil), req.Data()...)}
		select {
		case h.calls <- c:
		default:
		}
		v, err := handle(c)
		broker.Respond(req, v, err)
	}), micro.WithEndpointSubject(subject))
	require.NoError(h.t, err)
	// The server must have the subscription before jitctl's first call.
	require.NoError(h.t, h.env.NC.Flush())
}

// recv receives from ch or fails the test.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting")
		var zero T
		return zero
	}
}

// nextCall returns the next call a fake received, in order.
func (h *harness) nextCall(t *testing.T) call {
	t.Helper()
	return recv(t, h.calls)
}

// fakeRequester answers jitapi.request like the requester: bad input is
// refused with an API error; an accepted request is published as
// jit.requested and the reply carries its sequence; then follow publishes
// what the rest of the system would.
func (h *harness) fakeRequester(follow func(in broker.RequestInput, id string)) {
	h.serve(broker.APIRequest, func(c call) (any, error) {
		var in broker.RequestInput
		if err := broker.DecodeInput(c.body, &in); err != nil {
			return nil, err
		}
		if in.Agent != "market-intel" {
			return nil, broker.Errorf(404, events.CodeUnknownAgent, "unknown agent %q", in.Agent)
		}
		if in.Duration != "1m" && in.Duration != "2s" {
			return nil, broker.Errorf(400, events.CodeDurationExceeded, "duration %s is above market-intel's max_jit_duration of 60m", in.Duration)
		}
		id := in.RequestID
		if id == "" {
			id = events.NewID("req")
		}
		req := events.Request{RequestID: id, Agent: in.Agent, Permissions: in.Permissions, DurationMS: 60000,
			Reason: in.Reason, Context: in.Context, RequestedBy: events.Actor{Kind: events.ActorAgent, ID: in.Agent}, RequestedAt: time.Now()}
		_, seq, err := h.pub.Emit(h.ctx, id, events.TypeRequested, in.Agent, req, events.WithRequestID(id))
		if err != nil {
			return nil, err
		}
		if follow != nil {
			follow(in, id)
		}
		return broker.RequestAccepted{RequestID: id, Seq: seq}, nil
	})
	// jitctl catches up on the agent's events through jitapi.events, as
	// the requester answers it.
	h.serve(broker.APIEvents, func(c call) (any, error) {
		var in broker.EventsInput
		if err := broker.DecodeInput(c.body, &in); err != nil {
			return nil, err
		}
		out := broker.EventsPage{Events: []broker.StoredEvent{}, NextSeq: max(in.FromSeq, 1)}
		err := broker.ReadDirect(h.ctx, h.env.NC, broker.AuditStream, broker.DirectRead{Filter: "jit.*." + in.Agent, FromSeq: out.NextSeq},
			func(m broker.StoredMsg) error {
				out.Events = append(out.Events, broker.StoredEvent{Seq: m.Seq, Subject: m.Subject, Event: m.Data})
				out.NextSeq = m.Seq + 1
				return nil
			})
		return out, err
	})
}

func (h *harness) decide(id, agent, outcome, mode, how string, mutate ...func(*events.Decision)) {
	h.t.Helper()
	d := events.Decision{RequestID: id, Agent: agent, Outcome: outcome, Mode: mode, Rule: "market-intel-write",
		Reason: "rule " + mode, Permissions: []string{"data:write"}, DurationMS: 60000,
		Risk: &events.Risk{Score: 42}, DecidedBy: events.Actor{Kind: events.ActorRule, ID: "market-intel-write"}, DecidedAt: time.Now()}
	for _, m := range mutate {
		m(&d)
	}
	_, _, err := h.pub.Emit(h.ctx, events.DecisionEventID(id, how), events.TypeDecided, agent, d, events.WithRequestID(id))
	assert.NoError(h.t, err) // may run in a fake's goroutine: no FailNow
}

func (h *harness) grant(id, agent string, expires time.Time) events.Grant {
	h.t.Helper()
	g := events.Grant{GrantID: events.GrantIDFor(id), RequestID: id, Agent: agent, Permissions: []string{"data:write"},
		Reason: "r", Mode: events.ModeAutoApprove, GrantedAt: time.Now(), ExpiresAt: expires, Status: events.GrantActive}
	_, _, err := h.pub.Emit(h.ctx, events.GrantedEventID(g.GrantID), events.TypeGranted, agent, g,
		events.WithRequestID(id), events.WithGrantID(g.GrantID))
	assert.NoError(h.t, err) // may run in a fake's goroutine: no FailNow
	return g
}

// putGrant stores g in the grants bucket as the approval service does.
func (h *harness) putGrant(g events.Grant) {
	h.t.Helper()
	b, err := json.Marshal(g)
	require.NoError(h.t, err)
	_, err = h.env.Buckets.Grants.Put(h.ctx, broker.GrantKey(g.Agent, g.GrantID), b)
	require.NoError(h.t, err)
}

// newHarnessAt is newHarness on a server listening on addr with its store in
// dir, so that a test can restart the broker where clients reconnect.
func newHarnessAt(t *testing.T, addr, dir string) *harness {
	t.Helper()
	s := startServer(t, addr, dir)
	nc, js := natstest.Connect(t, s)
	require.NoError(t, broker.Ensure(t.Context(), js, broker.DefaultOptions()))
	b, err := broker.OpenBuckets(t.Context(), js)
	require.NoError(t, err)
	env := &natstest.Env{Server: s, StoreDir: dir, NC: nc, JS: js, Buckets: b, Log: natstest.Logger(t)}
	return &harness{
		t: t, env: env, pub: broker.NewPublisher(js, "fake"),
		vars:  map[string]string{"NATS_URL": s.ClientURL()},
		ctx:   t.Context(),
		calls: make(chan call, 16),
	}
}

func startServer(t *testing.T, addr, dir string) *server.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Options{Listen: addr, StoreDir: dir, ServerName: "test"})
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// freeAddr returns a local address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}
