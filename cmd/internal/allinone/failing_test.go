package allinone

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics/metricstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestFailingRevocationShowsInTheConsole: a revocation that cannot
// complete (its lease in a state the revoker does not know) keeps being
// retried and shows within seconds of its expiry on the approver console's
// page, with its grant, agent and last error, and in
// jit_revocations_failing; jitd runs with credentials, so the approval
// service may ask the revokers for their report. (jitctl status:
// TestStatusDegradedShowsFailingRevocation.)
func TestFailingRevocationShowsInTheConsole(t *testing.T) {
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0"},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	base := "http://" + app.HTTPAddr()
	console := signIn(t, base, "dev-carol")

	// As the revoker (the one who may write leases): a lease in a state
	// it does not know, whose grant key expires in a second.
	nc, err := app.connect(auth.Service(auth.ServiceRevoker))
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leases, err := js.KeyValue(ctx, broker.BucketLeases)
	require.NoError(t, err)
	now := time.Now().UTC()
	g := events.Grant{GrantID: "grt_stuck", RequestID: "req_stuck", Agent: "market-intel", Permissions: []string{"data:write"},
		Reason: "t", Mode: events.ModeAutoApprove, GrantedAt: now, ExpiresAt: now.Add(time.Second), Status: events.GrantActive}
	key := broker.GrantKey(g.Agent, g.GrantID)
	lease, err := json.Marshal(events.Lease{Grant: g, State: "stuck"})
	require.NoError(t, err)
	_, err = leases.Create(ctx, key, lease)
	require.NoError(t, err)
	gb, err := json.Marshal(g)
	require.NoError(t, err)
	_, err = broker.PutKeepTTL(ctx, js, broker.BucketGrants, key, gb, 0, broker.TTLFor(g.ExpiresAt, now))
	require.NoError(t, err)

	var page string
	require.Eventually(t, func() bool {
		page = console.get(t, "/console/live")
		return strings.Contains(page, `class="failing-revocation" data-grant="grt_stuck"`)
	}, 10*time.Second, 50*time.Millisecond, "the failing revocation shows on the console")
	require.Less(t, time.Since(g.ExpiresAt), 5*time.Second, "within seconds of the expiry")
	require.Regexp(t, `(?s)<tr class="failing-revocation" data-grant="grt_stuck">.*<strong>market-intel</strong>.*unknown state`, page)
	n, ok := metricstest.Scrape(t, base+"/metrics").Value("jit_revocations_failing")
	require.True(t, ok)
	require.GreaterOrEqual(t, n, 1.0)
}

// consoleSession is a signed-in approver's browser, without a browser.
type consoleSession struct {
	c    *http.Client
	base string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs in to the console at base with token.
func signIn(t *testing.T, base, token string) consoleSession {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	s := consoleSession{c: &http.Client{Jar: jar}, base: base}
	m := csrfField.FindStringSubmatch(s.get(t, "/console/login"))
	require.NotNil(t, m)
	req, err := http.NewRequest("POST", base+"/console/login", strings.NewReader(url.Values{"csrf": {m[1]}, "token": {token}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := s.c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "signed in and shown the console")
	return s
}

func (s consoleSession) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := s.c.Get(s.base + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	return string(b)
}
