package e2e

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func benchJitd(b *testing.B) string {
	b.Helper()
	return benchJitdWith(b, "../../examples/jit.yaml")
}

func benchJitdWith(b *testing.B, cfg string) string {
	b.Helper()
	dir := b.TempDir()
	app := allinone.New(allinone.Options{ConfigFile: cfg, DataDir: dir, NATSListen: "127.0.0.1:-1"}, zerolog.Nop())
	require.NoError(b, app.Run(context.Background()))
	b.Cleanup(app.Close)
	register(b, app.NATSURL(), filepath.Join(dir, "keys"), app.CredsDir())
	return app.NATSURL()
}

// BenchmarkSDKAutoApprove is the agent's round trip on the auto-approve
// path: sdk.Client.Request until the Grant is in hand (request → policy →
// grant → jit.granted read back).
func BenchmarkSDKAutoApprove(b *testing.B) {
	url := benchJitd(b)
	c := sdkClient(b, url, "market-intel")
	ctx := b.Context()
	for b.Loop() {
		g, err := c.Request(ctx, []string{"data:write"}, 10*time.Minute, "bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		// Keep the system's state flat: end the grant outside the timing.
		b.StopTimer()
		if err := g.Done(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// benchChecker starts a checker with the checker's credential, as a
// resource server runs one.
func benchChecker(b *testing.B, url string) *checker.Checker {
	b.Helper()
	nc := connectAs(b, url, auth.DefaultChecker)
	js, err := auth.JetStream(nc, auth.DefaultChecker, true)
	require.NoError(b, err)
	src, err := config.Follow(b.Context(), js, zerolog.Nop())
	require.NoError(b, err)
	chk := checker.New(js, src)
	require.NoError(b, chk.Start(b.Context()))
	b.Cleanup(chk.Stop)
	return chk
}

// BenchmarkRevocationToRefusal measures, per revocation, the time from
// asking the revoker to end a grant (jitapi.done) to a checker in another
// process-like client (its own connection) refusing the permission. Run
// with -benchtime 1000x for 1,000 revocations; p50 and p99 are reported.
func BenchmarkRevocationToRefusal(b *testing.B) {
	url := benchJitd(b)
	c := sdkClient(b, url, "market-intel")
	ctx := b.Context()
	chk := benchChecker(b, url)
	caller := agentConn(b, url, "market-intel")

	var samples []time.Duration
	for b.Loop() {
		b.StopTimer()
		g, err := c.Request(ctx, []string{"data:write"}, 10*time.Minute, "bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		for !chk.Allowed("market-intel", "data:write") {
			runtime.Gosched()
		}
		b.StartTimer()
		t0 := time.Now()
		if err := broker.Call(ctx, caller, broker.APIDone, "", broker.DoneInput{GrantID: g.ID()}, nil); err != nil {
			b.Fatal(err)
		}
		for chk.Allowed("market-intel", "data:write") {
			runtime.Gosched()
		}
		samples = append(samples, time.Since(t0))
	}
	slices.Sort(samples)
	pct := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkGuardrailToRefusal measures, per guardrail, the time from
// publishing guardrail.fired against an agent with 4 live grants until all
// 4 jit.revoked events are on the audit stream and a checker (its own
// connection) refuses the agent. The agent is reinstated between rounds,
// outside the timing. p50 and p99 are reported.
func BenchmarkGuardrailToRefusal(b *testing.B) {
	const agent, grantsPerRound = "market-intel", 4
	// The example configuration denies an agent whose guardrails fired three
	// times in a day; this benchmark fires one per round.
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(b, err)
	const rule = "condition: agent.guardrail_fires_24h >= 3"
	require.Contains(b, string(yml), rule)
	cfg := filepath.Join(b.TempDir(), "jit.yaml")
	require.NoError(b, os.WriteFile(cfg, []byte(strings.Replace(string(yml), rule, "condition: false", 1)), 0o600))
	url := benchJitdWith(b, cfg)
	c := sdkClient(b, url, agent)
	nc := agentConn(b, url, agent)
	ctx := b.Context()
	chk := benchChecker(b, url)
	revoked := make(chan struct{}, 64)
	sub, err := nc.Subscribe(broker.LivePrefix+".jit.revoked."+agent, func(*nats.Msg) { revoked <- struct{}{} })
	require.NoError(b, err)
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(b, nc.Flush())
	gjs, err := jetstream.New(connectAs(b, url, auth.Principal{Kind: auth.KindGuardrail, ID: "pricing-guard"}))
	require.NoError(b, err)
	admin := operatorConn(b, url)

	var samples []time.Duration
	for b.Loop() {
		b.StopTimer()
		for range grantsPerRound {
			if _, err := c.Request(ctx, []string{"data:write"}, 10*time.Minute, "bench", nil); err != nil {
				b.Fatal(err)
			}
		}
		for !chk.Allowed(agent, "data:write") {
			runtime.Gosched()
		}
		e, err := events.New(events.NewID("grd"), events.TypeGuardrailFired, "bench", agent,
			events.GuardrailFired{Agent: agent, Rule: "price-floor", Detail: "bench", FiredAt: time.Now().UTC()})
		require.NoError(b, err)
		b.StartTimer()
		t0 := time.Now()
		m, err := broker.ToMsg(events.Subject(events.TypeGuardrailFired, agent), e)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := gjs.PublishMsg(ctx, m); err != nil {
			b.Fatal(err)
		}
		for range grantsPerRound {
			<-revoked
		}
		for chk.Allowed(agent, "data:write") {
			runtime.Gosched()
		}
		samples = append(samples, time.Since(t0))
		b.StopTimer()
		if err := broker.Call(ctx, admin, broker.APIReinstate, "dev-bob", broker.ReinstateInput{Agent: agent}, nil); err != nil {
			b.Fatal(err)
		}
		for _, ok := chk.Suspended(agent); ok; _, ok = chk.Suspended(agent) {
			runtime.Gosched()
		}
		b.StartTimer()
	}
	slices.Sort(samples)
	pct := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
