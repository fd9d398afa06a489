package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/auditor"
	"github.com/stretchr/testify/require"
)

// signedTrail puts events on the harness's stream and runs the auditor over
// them, stopping it so that its last checkpoint covers them all. It returns
// the public key file. Sequences: events 1–n, checkpoints after every 1,024
// and at the end.
func signedTrail(t *testing.T, h *harness, n int) string {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys", "audit-ed25519.key")
	for i := range n {
		agent := []string{"market-intel", "svc-price-optimizer"}[i%2]
		_, _, err := h.pub.Emit(h.ctx, fmt.Sprintf("grd-%d", i+1), events.TypeGuardrailFired, agent,
			events.GuardrailFired{Agent: agent, Rule: "price-floor", Detail: fmt.Sprint(i + 1), FiredAt: time.Now()})
		require.NoError(t, err)
	}
	a := auditor.New(service.Deps{NC: h.env.NC, JS: h.env.JS, Buckets: h.env.Buckets, Log: h.env.Log},
		auditor.Options{KeyFile: keyFile, Interval: time.Hour})
	require.NoError(t, a.Start(h.ctx))
	require.Eventually(t, func() bool {
		c, err := h.env.JS.Consumer(h.ctx, broker.AuditStream, auditor.DefaultDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(h.ctx)
		return err == nil && info.Delivered.Stream >= uint64(n)
	}, 20*time.Second, 10*time.Millisecond)
	a.Stop()
	return audit.PublicKeyPath(keyFile)
}

// TestAuditExportThenVerify is docs/siem.md's archive procedure: export the
// trail to a file, verify the live stream and the file; then tamper with
// copies of the file in each of the four ways and with the live stream,
// and verify names the message each time (exit 1).
func TestAuditExportThenVerify(t *testing.T) {
	h := newHarness(t)
	pub := signedTrail(t, h, 30) // seq 1-30 events, 31 the checkpoint

	r := h.run("audit", "verify", "--key", pub)
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "whole: 31 messages, seq 1–31; 1 checkpoint(s)")
	require.Contains(t, r.stdout, "1 message(s) after seq 30 are not yet in a checkpoint")

	r = h.run("audit", "export")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 31)
	file := filepath.Join(t.TempDir(), "trail.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(r.stdout), 0o600))

	r = h.run("audit", "verify", "--file", file, "--key", pub, "--json")
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	out := r.lines(t)[0]
	require.Equal(t, true, out["whole"])
	require.EqualValues(t, 31, out["records"])
	require.EqualValues(t, 30, out["verified"])

	tampered := func(edit func(lines []string) []string) string {
		t.Helper()
		c := edit(append([]string(nil), lines...))
		f := filepath.Join(t.TempDir(), "tampered.jsonl")
		require.NoError(t, os.WriteFile(f, []byte(strings.Join(c, "\n")+"\n"), 0o600))
		return f
	}
	rec := func(line string) audit.Record {
		r, err := audit.DecodeRecord([]byte(line))
		require.NoError(t, err)
		return r
	}
	line := func(r audit.Record) string {
		b, err := audit.MarshalRecord(r)
		require.NoError(t, err)
		return string(b)
	}
	for _, tc := range []struct {
		name  string
		edit  func(lines []string) []string
		kind  string
		seq   uint64
		event string
	}{
		{"deleted", func(l []string) []string { return append(l[:11], l[12:]...) }, audit.Deleted, 12, ""},
		{"altered", func(l []string) []string {
			r := rec(l[16])
			r.Body = bytes.Replace(r.Body, []byte(`"detail":"17"`), []byte(`"detail":"harmless"`), 1)
			l[16] = line(r)
			return l
		}, audit.Altered, 17, "grd-17"},
		{"inserted", func(l []string) []string {
			r := rec(l[4])
			r.Body = bytes.ReplaceAll(r.Body, []byte("grd-5"), []byte("grd-forged"))
			r.Header = map[string][]string{"Content-Type": {events.ContentType}, "Nats-Msg-Id": {"grd-forged"}}
			return append(l[:5], append([]string{line(r)}, l[5:]...)...)
		}, audit.Inserted, 5, "grd-forged"},
		{"reordered", func(l []string) []string {
			l[21], l[22] = l[22], l[21]
			return l
		}, audit.Reordered, 23, "grd-23"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tampered(tc.edit)
			r := h.run("audit", "verify", "--file", f, "--key", pub)
			require.Equal(t, exitRefused, r.code, r.stdout+r.stderr)
			require.True(t, strings.HasPrefix(r.stdout, fmt.Sprintf("TAMPERED: %s: seq %d", tc.kind, tc.seq)), r.stdout)
			require.Contains(t, r.stdout, tc.event)

			r = h.run("audit", "verify", "--file", f, "--key", pub, "--json")
			require.Equal(t, exitRefused, r.code)
			first := r.lines(t)[0]["first"].(map[string]any)
			require.Equal(t, tc.kind, first["kind"])
			require.EqualValues(t, tc.seq, first["seq"])
		})
	}

	t.Run("the live stream refuses deletion", func(t *testing.T) {
		// deny_delete: not even the break-glass credential removes one
		// event; a copy is where tampering can happen, and verify finds it.
		st, err := h.env.JS.Stream(h.ctx, broker.AuditStream)
		require.NoError(t, err)
		require.ErrorContains(t, st.DeleteMsg(h.ctx, 7), "not permitted")
		require.Equal(t, exitOK, h.run("audit", "verify", "--key", pub).code)
		require.Equal(t, exitOK, h.run("audit", "verify", "--file", file, "--key", pub).code)
	})

	t.Run("errors", func(t *testing.T) {
		r := h.run("audit", "verify", "--file", file)
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stderr, "--key is required")
		other := filepath.Join(t.TempDir(), "other.pub")
		_, _, err := audit.LoadOrCreateKey(filepath.Join(filepath.Dir(other), "other.key"))
		require.NoError(t, err)
		r = h.run("audit", "verify", "--file", file, "--key", other)
		require.Equal(t, exitRefused, r.code, "checkpoints of an unknown key are not trusted")
		require.Contains(t, r.stdout, "unverifiable")
		bad := filepath.Join(t.TempDir(), "bad.jsonl")
		require.NoError(t, os.WriteFile(bad, []byte(lines[0]+"\nnot json\n"), 0o600))
		r = h.run("audit", "verify", "--file", bad, "--key", pub)
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stderr, "line 2")
		r = h.run("audit", "verify", "--file", filepath.Join(t.TempDir(), "missing"), "--key", pub)
		require.Equal(t, exitError, r.code)
	})
}
