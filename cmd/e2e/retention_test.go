package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestAuditRetention: jitd --audit-max-age sets how long the audit stream
// keeps events, and a later start without it keeps that setting.
func TestAuditRetention(t *testing.T) {
	dir := t.TempDir()
	maxAge := func(app *allinone.App) time.Duration {
		t.Helper()
		js, err := jetstream.New(adminConnect(t, app.NATSURL()))
		require.NoError(t, err)
		s, err := js.Stream(t.Context(), broker.AuditStream)
		require.NoError(t, err)
		return s.CachedInfo().Config.MaxAge
	}
	start := func(age time.Duration, config string) *allinone.App {
		app := allinone.New(allinone.Options{ConfigFile: config, DataDir: dir, NATSListen: "127.0.0.1:-1", AuditMaxAge: age},
			natstest.Logger(t))
		require.NoError(t, app.Run(context.Background()))
		register(t, app.NATSURL(), filepath.Join(dir, "keys"), app.CredsDir())
		return app
	}
	app := start(30*24*time.Hour, exampleConfig(t))
	require.Equal(t, 30*24*time.Hour, maxAge(app))
	app.Close()

	app = start(0, "")
	t.Cleanup(app.Close)
	require.Equal(t, 30*24*time.Hour, maxAge(app), "kept by a start without the flag")
}
