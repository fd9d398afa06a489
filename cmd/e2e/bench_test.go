package e2e

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func benchJitd(b *testing.B) string {
	b.Helper()
	cfg := "../../examples/jit.yaml"
	app := allinone.New(allinone.Options{ConfigFile: cfg, DataDir: b.TempDir(), NATSListen: "127.0.0.1:-1"}, zerolog.Nop())
	require.NoError(b, app.Run(context.Background()))
	b.Cleanup(app.Close)
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

// BenchmarkRevocationToRefusal measures, per revocation, the time from
// asking the revoker to end a grant (jitapi.done) to a checker in another
// process-like client (its own connection) refusing the permission. Run
// with -benchtime 1000x for 1,000 revocations; p50 and p99 are reported.
func BenchmarkRevocationToRefusal(b *testing.B) {
	url := benchJitd(b)
	c := sdkClient(b, url, "market-intel")
	nc := agentConn(b, url)
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	ctx := b.Context()
	bk, err := broker.OpenBuckets(ctx, js)
	require.NoError(b, err)
	src, err := config.Watch(ctx, bk.Config, zerolog.Nop())
	require.NoError(b, err)
	chk := checker.New(js, src)
	require.NoError(b, chk.Start(ctx))
	b.Cleanup(chk.Stop)
	caller := agentConn(b, url)

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
