package allinone

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/metrics/metricstest"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestMetricsFollowAGrant scrapes jitd's /metrics as Prometheus would and
// checks that one auto-approved grant and its expiry move the right series:
// the decision, the grant and its latency, the live grants up and down, the
// revocation by reason and its lag; and that the consumers, the
// configuration, the build and the notification counters are there.
func TestMetricsFollowAGrant(t *testing.T) {
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	url := "http://" + app.HTTPAddr() + "/metrics"

	before := metricstest.Scrape(t, url)
	for _, name := range []string{"jit_build_info", "jit_config_revision", "jit_notifications_delivered_total",
		"jit_notification_retries_total", "jit_grants_live", "jit_revocations_failing", "jit_pending_approvals", "jit_agents_suspended"} {
		require.Contains(t, before, name)
	}
	rev, _ := before.Value("jit_config_revision")
	require.GreaterOrEqual(t, rev, 1.0)
	for _, durable := range []string{"policy", "approval", "approval-timeouts", "revoker-expiry", "revoker-guardrail", "auditor"} {
		_, ok := before.Value("jit_consumer_pending_messages", "consumer", durable)
		require.True(t, ok, "consumer %s has its backlog series", durable)
	}
	approved := []string{"outcome", "approved", "mode", "auto-approve"}
	val := func(f metricstest.Families, name string, labels ...string) float64 {
		v, _ := f.Value(name, labels...)
		return v
	}

	nc, err := nats.Connect(app.NATSURL(), nats.UserCredentials(filepath.Join(app.CredsDir(), auth.Principal{Kind: auth.KindAgent, ID: "market-intel"}.CredsFile())))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	client, err := sdk.New(nc, "market-intel")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := client.Request(ctx, []string{"data:write"}, 2*time.Second, "metrics test", nil)
	require.NoError(t, err)

	// The agent hears of its grant from the stream, an instant before the
	// publisher counts it and the revoker's ledger holds it: poll.
	var granted metricstest.Families
	require.Eventually(t, func() bool {
		granted = metricstest.Scrape(t, url)
		return val(granted, "jit_grants_live") == 1 &&
			val(granted, "jit_grants_total", "mode", "auto-approve") == val(before, "jit_grants_total", "mode", "auto-approve")+1
	}, 10*time.Second, 20*time.Millisecond, "the grant is counted and live")
	require.Equal(t, val(before, "jit_requests_total", approved...)+1, val(granted, "jit_requests_total", approved...))
	require.Equal(t, val(before, "jit_grants_total", "mode", "auto-approve")+1, val(granted, "jit_grants_total", "mode", "auto-approve"))
	require.Equal(t, val(before, "jit_decision_latency_seconds")+1, val(granted, "jit_decision_latency_seconds"))
	require.Equal(t, val(before, "jit_request_to_grant_seconds", "mode", "auto-approve")+1, val(granted, "jit_request_to_grant_seconds", "mode", "auto-approve"))
	require.Equal(t, val(before, "jit_api_calls_total", "endpoint", "jitapi.request", "status", "200")+1,
		val(granted, "jit_api_calls_total", "endpoint", "jitapi.request", "status", "200"))

	expired := []string{"reason", "expired"}
	var after metricstest.Families
	require.Eventually(t, func() bool {
		after = metricstest.Scrape(t, url)
		return val(after, "jit_revocations_total", expired...) == val(before, "jit_revocations_total", expired...)+1
	}, 15*time.Second, 50*time.Millisecond, "the expiry of grant %s is counted", g.ID())
	require.Equal(t, val(before, "jit_revocation_lag_seconds", expired...)+1, val(after, "jit_revocation_lag_seconds", expired...))
	for _, m := range after["jit_revocation_lag_seconds"].GetMetric() {
		require.Less(t, m.GetHistogram().GetSampleSum(), 2.0, "revoked within 2 s of expires_at")
	}
	require.Equal(t, 0.0, val(after, "jit_grants_live"), "no grant is live after the expiry")
	require.Equal(t, 0.0, val(after, "jit_revocations_failing"))

	resp, err := http.Get("http://" + app.HTTPAddr() + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
