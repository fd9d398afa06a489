package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func (h *harness) fire(agent string, n int) {
	h.t.Helper()
	for range n {
		_, _, err := h.pub.Emit(h.ctx, events.NewID("grd"), events.TypeGuardrailFired, agent,
			events.GuardrailFired{Agent: agent, Rule: "price-floor", FiredAt: time.Now()})
		require.NoError(h.t, err)
	}
}

// following is a jitctl audit --follow running until stop.
type following struct {
	out    *syncBuffer
	stop   context.CancelFunc
	result chan result
}

func (h *harness) follow(args ...string) *following {
	ctx, cancel := context.WithCancel(h.ctx)
	f := &following{out: &syncBuffer{}, stop: cancel, result: make(chan result, 1)}
	go func() {
		var errb syncBuffer
		code := run(ctx, append([]string{"audit", "--follow"}, args...), f.out, &errb, h.getenv)
		f.result <- result{code, f.out.String(), errb.String()}
	}()
	h.t.Cleanup(cancel)
	return f
}

func (f *following) lines() []string {
	s := strings.TrimSpace(f.out.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (f *following) end(t *testing.T) result {
	t.Helper()
	f.stop()
	r := recv(t, f.result)
	require.Equal(t, exitOK, r.code, r.stderr)
	return r
}

func consumerNames(t *testing.T, h *harness) []string {
	st, err := h.env.JS.Stream(h.ctx, broker.AuditStream)
	require.NoError(t, err)
	var out []string
	names := st.ConsumerNames(h.ctx)
	for n := range names.Name() {
		out = append(out, n)
	}
	require.NoError(t, names.Err())
	return out
}

// TestAuditFollowResumes: --follow prints what is there and what comes,
// acknowledges each line, and a second run resumes after the last line.
func TestAuditFollowResumes(t *testing.T) {
	h := newHarness(t)
	h.fire("market-intel", 3)
	require.Equal(t, exitOK, h.run("audit").code)
	require.Empty(t, consumerNames(t, h), "plain audit creates no consumer")

	f := h.follow("--format", "ocsf")
	require.Eventually(t, func() bool { return len(f.lines()) == 3 }, 10*time.Second, 10*time.Millisecond)
	h.fire("market-intel", 2)
	require.Eventually(t, func() bool { return len(f.lines()) == 5 }, 10*time.Second, 10*time.Millisecond)
	r := f.end(t)
	for _, l := range r.lines(t) {
		require.EqualValues(t, 2004, l["class_uid"], "guardrails are detection findings")
	}
	require.Equal(t, []string{followName}, consumerNames(t, h))
	c, err := h.env.JS.Consumer(h.ctx, broker.AuditStream, followName)
	require.NoError(t, err)
	// Each line is acknowledged (a confirmed ack) before the next is
	// read; the consumer's ack floor may trail the confirmation by a
	// moment.
	var info *jetstream.ConsumerInfo
	require.Eventually(t, func() bool {
		info, err = c.Info(h.ctx)
		return err == nil && info.AckFloor.Stream == 5
	}, 10*time.Second, 10*time.Millisecond, "every printed line is acknowledged")
	require.Equal(t, jetstream.AckExplicitPolicy, info.Config.AckPolicy)

	h.fire("svc-price-optimizer", 1)
	f = h.follow("--json")
	require.Eventually(t, func() bool { return len(f.lines()) == 1 }, 10*time.Second, 10*time.Millisecond)
	r = f.end(t)
	require.Equal(t, "svc-price-optimizer", r.lines(t)[0]["subject"], "resumed after the last line printed")
}

// TestAuditFollowBindsAPrecreatedConsumer: a principal that may not create
// consumers follows one an administrator made; its filter stays.
func TestAuditFollowBindsAPrecreatedConsumer(t *testing.T) {
	h := newHarness(t)
	_, err := h.env.JS.CreateConsumer(h.ctx, broker.AuditStream, jetstream.ConsumerConfig{
		Durable: "siem", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "*.*.svc-price-optimizer"})
	require.NoError(t, err)
	h.fire("market-intel", 2)
	h.fire("svc-price-optimizer", 2)
	f := h.follow("--durable", "siem", "--agent", "market-intel")
	require.Eventually(t, func() bool { return len(f.lines()) == 2 }, 10*time.Second, 10*time.Millisecond)
	r := f.end(t)
	for _, l := range f.lines() {
		require.Contains(t, l, "svc-price-optimizer")
	}
	require.Contains(t, r.stderr, "existing consumer siem")
	require.ElementsMatch(t, []string{"siem"}, consumerNames(t, h), "nothing else created")

	r = h.run("audit", "--follow", "--durable", "bad name")
	require.Equal(t, exitError, r.code)
	r = h.run("audit", "--format", "xml")
	require.Equal(t, exitError, r.code)
}

// TestAuditFormatOCSF: every line is one OCSF object with the mapped class.
func TestAuditFormatOCSF(t *testing.T) {
	h := newHarness(t)
	h.decide("req_a", "market-intel", events.OutcomeApproved, events.ModeAutoApprove, "policy")
	g := h.grant("req_a", "market-intel", time.Now().Add(time.Hour))
	h.fire("market-intel", 1)
	r := h.run("audit", "--format", "ocsf")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := r.lines(t)
	require.Len(t, lines, 3)
	for i, want := range []struct {
		class, activity float64
	}{{3003, 1}, {3005, 1}, {2004, 1}} {
		require.Equal(t, want.class, lines[i]["class_uid"], fmt.Sprint(lines[i]))
		require.Equal(t, want.activity, lines[i]["activity_id"])
		require.Equal(t, want.class*100+want.activity, lines[i]["type_uid"])
	}
	require.Equal(t, g.GrantID+"/granted", lines[1]["metadata"].(map[string]any)["uid"])
	require.Equal(t, []any{"data:write"}, lines[1]["privileges"])
}
