package web

import (
	"net/url"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// TestRefusalsNameTheirRequest: a refusal over HTTP that comes before the
// caller is known (no token, a wrong one, a bad CSRF token) or before the
// body is decoded still names the request the call was about, in the
// jit.rejected data and its requestid extension; one about a grant names
// the grant. (The NATS API's: package approval.)
func TestRefusalsNameTheirRequest(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	reqID := events.NewID("req")
	h.EmitPolicy(pendingDecision(reqID, 10*time.Minute))
	h.WaitPending(agentOptimizer, reqID)

	requireAbout := h.RequireLastRejectionAbout

	// HTTP JSON API.
	st, _ := apiDo(t, srv, "POST", "/api/v1/requests/"+reqID+"/approve", "", "{}")
	require.Equal(t, 401, st)
	requireAbout("HTTP approve without token", reqID, "")
	st, _ = apiDo(t, srv, "POST", "/api/v1/requests/"+reqID+"/deny", "dev-alice", `{"colour":"red"}`)
	require.Equal(t, 400, st)
	requireAbout("HTTP deny with an unknown field", reqID, "")
	st, _ = apiDo(t, srv, "POST", "/api/v1/grants/grt_x1/revoke", "dev-nobody", "{}")
	require.Equal(t, 401, st)
	requireAbout("HTTP revoke with a wrong token", "", "grt_x1")

	// Console forms.
	c := newConsoleClient(t, srv)
	c.signIn("dev-alice")
	resp, _ := c.post("/console/requests/"+reqID+"/approve", url.Values{"csrf": {"stale"}}, srv.URL)
	require.Equal(t, 403, resp.StatusCode)
	requireAbout("console approve with a stale CSRF token", reqID, "")
	resp, _ = c.post("/console/grants/grt_x2/revoke", url.Values{"csrf": {"stale"}}, srv.URL)
	require.Equal(t, 403, resp.StatusCode)
	requireAbout("console revoke with a stale CSRF token", "", "grt_x2")
}
