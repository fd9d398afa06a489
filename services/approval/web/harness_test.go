package web

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/approval"
	"github.com/agentjit/jit/services/approval/approvaltest"
	"github.com/stretchr/testify/require"
)

const (
	agentOptimizer = approvaltest.AgentOptimizer
	waitFor        = approvaltest.WaitFor
	tick           = approvaltest.Tick
)

func pendingDecision(reqID string, d time.Duration) events.Decision {
	return approvaltest.PendingDecision(reqID, d)
}

func dataOf[T any](t *testing.T, e events.Event) T { return approvaltest.DataOf[T](t, e) }

func ctxT(t *testing.T) context.Context { return approvaltest.Ctx(t) }

// harness is the approval service's broker harness (approvaltest).
type harness struct {
	*approvaltest.Harness
	t *testing.T
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{Harness: approvaltest.New(t), t: t}
}

// startHTTP runs the approval service, and its console on a test server.
func (h *harness) startHTTP() (*approval.Service, *httptest.Server) {
	h.t.Helper()
	return h.startHTTPWith()
}

// startHTTPWith is startHTTP with options for the console.
func (h *harness) startHTTPWith(opts ...Option) (*approval.Service, *httptest.Server) {
	h.t.Helper()
	s := approval.New(h.Deps())
	require.NoError(h.t, s.Start(context.Background()))
	h.t.Cleanup(s.Stop)
	w := New(s, h.Deps(), opts...)
	srv := httptest.NewServer(w.Handler())
	// Cleanups run last first: the server and the console end before the
	// service stops, as Served.Stop and jitd do.
	h.t.Cleanup(func() { w.CloseStreams(); srv.Close(); w.Close() })
	return s, srv
}
