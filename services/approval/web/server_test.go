package web

import (
	"context"
	"net/http"
	"testing"

	"github.com/agentjit/jit/services/approval"
	"github.com/stretchr/testify/require"
)

// TestServedListensAndStops: what the approval binary runs with
// JIT_HTTP_LISTEN starts the service and serves the console on its own
// listener, stops both, and starts once.
func TestServedListensAndStops(t *testing.T) {
	h := newHarness(t)
	s := Serve(approval.New(h.Deps()), h.Deps(), "127.0.0.1:0")
	require.Empty(t, s.Addr())
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)
	require.NotEmpty(t, s.Addr())
	resp, err := http.Get("http://" + s.Addr() + "/console/login")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	h.ListPending("dev-alice") // the service answers on NATS too

	s.Stop()
	_, err = http.Get("http://" + s.Addr() + "/console/login")
	require.Error(t, err, "the listener is closed")
	require.ErrorIs(t, s.Start(context.Background()), approval.ErrStarted)
	s.Stop() // again: nothing to do
}
