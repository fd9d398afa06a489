package approval

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

func TestAuthLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newAuthLimiter(func() time.Time { return now })
	for i := 1; i < maxAuthFailures; i++ {
		require.False(t, l.fail("10.0.0.1"), "failure %d", i)
		_, blocked := l.blocked("10.0.0.1")
		require.False(t, blocked)
	}
	require.True(t, l.fail("10.0.0.1"), "the tenth failure starts the lockout")
	left, blocked := l.blocked("10.0.0.1")
	require.True(t, blocked)
	require.Equal(t, authWindow, left)
	_, blocked = l.blocked("10.0.0.2")
	require.False(t, blocked, "other addresses are not affected")

	now = now.Add(authWindow)
	_, blocked = l.blocked("10.0.0.1")
	require.False(t, blocked, "the lockout ends with its window")
	require.False(t, l.fail("10.0.0.1"), "a new window starts from one")

	// Failures spread over more than a window never lock out.
	for i := range 3 * maxAuthFailures {
		now = now.Add(authWindow / (maxAuthFailures - 2))
		require.False(t, l.fail("10.0.0.3"), "failure %d", i)
	}

	// A success forgets the failures.
	for range maxAuthFailures - 1 {
		l.fail("10.0.0.4")
	}
	l.succeed("10.0.0.4")
	require.False(t, l.fail("10.0.0.4"))

	// Memory is bounded: past maxAuthTracked addresses, expired ones are
	// dropped, and new ones are not tracked while all are current.
	for i := range maxAuthTracked {
		l.fail(fmt.Sprintf("fd00::%x", i))
	}
	require.LessOrEqual(t, len(l.byAddr), maxAuthTracked)
	require.False(t, l.fail("10.9.9.9"))
	require.NotContains(t, l.byAddr, "10.9.9.9")
	now = now.Add(authWindow)
	l.fail("10.9.9.9")
	require.Contains(t, l.byAddr, "10.9.9.9", "expired entries make room")
	require.Less(t, len(l.byAddr), 100)
}

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
	for i := range maxAuthFailures {
		require.Equal(t, http.StatusUnauthorized, signIn("dev-mallory").StatusCode, "attempt %d", i+1)
	}
	resp := signIn("dev-alice")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "a valid token too, while locked out")
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	require.InDelta(t, authWindow.Seconds(), secs, 5)

	st, out := apiDo(t, srv, "GET", "/api/v1/pending", "dev-alice", "")
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Equal(t, events.CodeRateLimited, out["code"])

	var unauth, limited int
	for _, e := range h.audit("jit.rejected.>") {
		switch dataOf[events.Rejection](t, e).Code {
		case events.CodeUnauthenticated:
			unauth++
		case events.CodeRateLimited:
			limited++
		}
	}
	require.Equal(t, maxAuthFailures, unauth, "each wrong token audited")
	require.Equal(t, 1, limited, "the lockout audited once")
}
