package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQuickRun runs the whole benchmark at a tiny scale against a real jitd
// subprocess and checks that every figure the issue names is in the JSON.
// It asserts no timing: the figures of a loaded test machine mean nothing.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts jitd twice and waits for grants to expire")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/agentjit/jit/cmd/jitd")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build jitd: %s", out)

	p := params{
		limitN: 100, seqN: 20, tputDur: 300 * time.Millisecond, concurrency: []int{1, 8},
		expiryN: 30, expiryMin: 1200 * time.Millisecond, expiryMax: 1800 * time.Millisecond,
		stormN: 40, guardAgents: 2, guardK: 2, scaleN: 300, scaleExpiryN: 10, checkN: 1000,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := run(ctx, options{jitd: filepath.Join(dir, "jitd"), params: p, quick: true, log: io.Discard})
	require.NoError(t, err)
	path := filepath.Join(dir, "results.json")
	require.NoError(t, rep.write(path))

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{
		"auto_approve_p50_ms", "auto_approve_p99_ms", "auto_approve_p999_ms", "grants_per_second",
		"grants_per_second_c1", "expiry_event_lag_p99_ms", "enforcement_late_max_ms",
		"guardrail_to_refusal_p99_ms", "rss_mb_at_100k_grants", "js_async_publish_per_second",
		"js_sync_publish_p50_ms", "kv_put_p50_ms", "expiry_storm_last_revocation_ms",
		"revoker_restore_ms", "check_p99_ms", "grants_per_second_vs_limit",
	} {
		require.Contains(t, m, k)
		require.NotNil(t, m[k], k)
	}
	// Nothing may be lost, and the checker may never allow an expired grant.
	for _, k := range []string{"expiry_lost", "expiry_storm_lost", "guardrail_lost", "expiry_lost_at_100k", "expiry_lost_after_restart"} {
		require.Zero(t, m[k], k)
	}
	require.Zero(t, m["enforcement_late_max_ms"])
	var buf nopWriter
	rep.print(&buf)
}

type nopWriter struct{}

func (*nopWriter) Write(p []byte) (int, error) { return len(p), nil }
