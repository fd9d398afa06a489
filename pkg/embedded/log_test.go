package embedded_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestServerErrorsAreLogged: what the server refuses (here a client with
// a wrong password) reaches the log given, marked as the server's, instead
// of vanishing.
func TestServerErrorsAreLogged(t *testing.T) {
	var buf natstest.LockedBuffer
	log := zerolog.New(&buf)
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Log: &log,
		Configure: func(o *server.Options) error { o.Username, o.Password = "u", "right"; return nil }})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)

	_, err = nats.Connect(s.ClientURL(), nats.UserInfo("u", "wrong"), nats.MaxReconnects(0))
	require.Error(t, err)
	require.Eventually(t, func() bool {
		out := buf.String()
		return strings.Contains(out, `"component":"nats-server"`) && strings.Contains(out, `"level":"error"`) &&
			strings.Contains(out, "authentication error")
	}, 10*time.Second, 20*time.Millisecond, "the refused client is logged: %s", buf.String())
}
