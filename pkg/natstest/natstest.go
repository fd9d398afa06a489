// Package natstest starts a real, embedded nats-server with JetStream for
// tests, with the JIT topology in place. No broker is mocked.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// Env is a running broker with the topology created and a connection.
type Env struct {
	Server   *server.Server
	StoreDir string
	NC       *nats.Conn
	JS       jetstream.JetStream
	Buckets  broker.Buckets
	Log      zerolog.Logger
}

// RunServer starts a server on a free port with its store in storeDir (a new
// t.TempDir() if empty) and shuts it down at cleanup.
func RunServer(t testing.TB, storeDir string) *server.Server {
	t.Helper()
	if storeDir == "" {
		storeDir = t.TempDir()
	}
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:-1", StoreDir: storeDir, ServerName: "test"})
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s and closes the connection at cleanup.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// Setup starts a server, connects, and creates the JIT stream and buckets.
func Setup(t testing.TB) *Env {
	t.Helper()
	return SetupAt(t, t.TempDir())
}

// SetupAt is Setup with the store in dir, so a test can restart a server on
// the same data.
func SetupAt(t testing.TB, dir string) *Env {
	t.Helper()
	s := RunServer(t, dir)
	nc, js := Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := broker.DefaultOptions()
	o.Update = true
	require.NoError(t, broker.Ensure(ctx, js, o))
	b, err := broker.OpenBuckets(ctx, js)
	require.NoError(t, err)
	return &Env{Server: s, StoreDir: dir, NC: nc, JS: js, Buckets: b, Log: Logger(t)}
}

// Logger returns a zerolog logger writing to the test's log.
func Logger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
}

// ApplyConfig parses yml, stores it as the active configuration (whole in
// the secrets bucket, redacted in the config bucket), and returns a Source
// that follows the redacted copy, as every service but approval does.
func (e *Env) ApplyConfig(t testing.TB, yml string) *config.Source {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(yml))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = config.ApplyWithSecrets(ctx, config.Buckets{Config: e.Buckets.Config, Secrets: e.Buckets.Secrets}, c)
	require.NoError(t, err)
	return e.watch(t, e.Buckets.Config)
}

// WatchSecrets returns a Source that follows the whole configuration (the
// secrets bucket), as the approval service does.
func (e *Env) WatchSecrets(t testing.TB) *config.Source {
	t.Helper()
	return e.watch(t, e.Buckets.Secrets)
}

func (e *Env) watch(t testing.TB, kv jetstream.KeyValue) *config.Source {
	t.Helper()
	wctx, wcancel := context.WithCancel(context.Background())
	t.Cleanup(wcancel)
	src, err := config.Watch(wctx, kv, e.Log)
	require.NoError(t, err)
	return src
}

// AuditEvents reads every event on the audit stream whose subject matches
// filter (e.g. "jit.revoked.>"), in order, without consuming durably. A
// read that fails fails the test: a partial list would let an assertion
// that some event is absent pass on a broken read.
func (e *Env) AuditEvents(t testing.TB, filter string) []jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ReadAudit(ctx, e.JS, filter)
	require.NoError(t, err, "read the audit stream (%s)", filter)
	return out
}

// ReadAudit reads every message of the audit stream whose subject matches
// filter, in order. It ends only at the end of the stream: any other error
// (a timeout, a closed connection) is returned, never a partial list.
func ReadAudit(ctx context.Context, js jetstream.JetStream, filter string) ([]jetstream.RawStreamMsg, error) {
	st, err := js.Stream(ctx, broker.AuditStream)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	var out []jetstream.RawStreamMsg
	var seq uint64 = 1
	for {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		switch err = broker.MapError(err); {
		case errors.Is(err, broker.ErrNotFound):
			return out, nil // no message at or after seq: the end
		case err != nil:
			return nil, fmt.Errorf("read the audit stream (%s) at %d: %w", filter, seq, err)
		}
		out = append(out, *m)
		seq = m.Sequence + 1
	}
}
