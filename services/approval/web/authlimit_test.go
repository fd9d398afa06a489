package web

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/stretchr/testify/require"
)

// TestSignInLockout: ten wrong tokens from one address lock it out of the
// console and the HTTP API for a minute, valid tokens included, and the
// lockout is audited once.
func TestSignInLockout(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	c := newConsoleClient(t, srv)
	signIn := func(token string) *http.Response {
		_, body := c.get("/console/login")
		m := csrfField.FindStringSubmatch(body)
		require.NotNil(t, m)
		resp, _ := c.post("/console/login", url.Values{"csrf": {m[1]}, "token": {token}}, srv.URL)
		return resp
	}
	for i := range service.MaxAuthFailures {
		require.Equal(t, http.StatusUnauthorized, signIn("dev-mallory").StatusCode, "attempt %d", i+1)
	}
	resp := signIn("dev-alice")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "a valid token too, while locked out")
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.InDelta(t, service.AuthWindow.Seconds(), secs, 5)

	st, out := apiDo(t, srv, "GET", "/api/v1/pending", "dev-alice", "")
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Equal(t, events.CodeRateLimited, out["code"])

	var unauth, limited int
	for _, e := range h.Audit("jit.rejected.>") {
		switch dataOf[events.Rejection](t, e).Code {
		case events.CodeUnauthenticated:
			unauth++
		case events.CodeRateLimited:
			limited++
		}
	}
	require.Equal(t, service.MaxAuthFailures, unauth, "each wrong token audited")
	require.Equal(t, 1, limited, "the lockout audited once")
}
