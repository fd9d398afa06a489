package web

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

func apiDo(t *testing.T, srv *httptest.Server, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

func TestHTTPAPI(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	reqID := events.NewID("req")
	h.EmitPolicy(pendingDecision(reqID, 10*time.Minute))
	h.WaitPending(agentOptimizer, reqID)

	st, out := apiDo(t, srv, "GET", "/api/v1/pending", "", "")
	require.Equal(t, 401, st)
	require.Equal(t, events.CodeUnauthenticated, out["code"])
	st, _ = apiDo(t, srv, "GET", "/api/v1/pending", "dev-nobody", "")
	require.Equal(t, 401, st)

	st, out = apiDo(t, srv, "GET", "/api/v1/pending", "dev-carol", "")
	require.Equal(t, 200, st)
	list := out["pending"].([]any)
	require.Len(t, list, 1)
	p := list[0].(map[string]any)
	require.Equal(t, reqID, p["request_id"])
	require.Equal(t, false, p["can_answer"], "carol is an operator")
	require.Contains(t, p["why_not"], "security-admin")
	require.Equal(t, "reprice the catalogue", p["reason"])
	require.Equal(t, map[string]any{"ticket": "OPS-1"}, p["context"])

	st, out = apiDo(t, srv, "POST", "/api/v1/requests/"+reqID+"/approve", "dev-carol", "{}")
	require.Equal(t, 403, st)
	require.Equal(t, events.CodeForbidden, out["code"])
	st, _ = apiDo(t, srv, "POST", "/api/v1/requests/"+reqID+"/approve", "dev-alice", `{"colour":"red"}`)
	require.Equal(t, 400, st)

	st, out = apiDo(t, srv, "POST", "/api/v1/requests/"+reqID+"/approve", "dev-alice", `{"comment":"ok","duration":"2m"}`)
	require.Equal(t, 200, st, out)
	require.Equal(t, events.OutcomeApproved, out["outcome"])
	g := h.WaitGranted(reqID)
	require.Equal(t, int64(2*60_000), g.ExpiresAt.Sub(h.WaitDecision(reqID, "human").DecidedAt).Milliseconds())

	st, out = apiDo(t, srv, "POST", "/api/v1/requests/"+reqID+"/deny", "dev-alice", `{"comment":"late"}`)
	require.Equal(t, 409, st)
	require.Equal(t, events.CodeStale, out["code"])

	require.Eventually(t, func() bool {
		_, out = apiDo(t, srv, "GET", "/api/v1/grants", "dev-bob", "")
		return len(out["grants"].([]any)) == 1
	}, waitFor, tick)
	require.Equal(t, g.GrantID, out["grants"].([]any)[0].(map[string]any)["grant_id"])
	st, out = apiDo(t, srv, "GET", "/api/v1/suspensions", "dev-bob", "")
	require.Equal(t, 200, st)
	require.Empty(t, out["suspensions"])
}

// consoleClient is a browser stand-in: a cookie jar, no redirects followed
// automatically unless asked.
type consoleClient struct {
	t   *testing.T
	srv *httptest.Server
	c   *http.Client
}

func newConsoleClient(t *testing.T, srv *httptest.Server) *consoleClient {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Transport: srv.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &consoleClient{t: t, srv: srv, c: c}
}

func (c *consoleClient) get(path string) (*http.Response, string) {
	c.t.Helper()
	resp, err := c.c.Get(c.srv.URL + path)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *consoleClient) post(path string, form url.Values, origin string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest("POST", c.srv.URL+path, strings.NewReader(form.Encode()))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.c.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// liveUpdates opens the console's live-update stream (as the page's
// script does) and returns a function that waits for its next "changed"
// event, failing the test with msg if none comes.
func (c *consoleClient) liveUpdates() func(msg string) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.srv.URL+"/console/events", nil)
	require.NoError(c.t, err)
	sse, err := c.c.Do(req)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { sse.Body.Close() })
	require.Equal(c.t, "text/event-stream", sse.Header.Get("Content-Type"))
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(sse.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	require.Equal(c.t, "retry: 2000", <-lines)
	return func(msg string) {
		c.t.Helper()
		require.Eventually(c.t, func() bool {
			for {
				select {
				case l := <-lines:
					if l == "event: changed" {
						return true
					}
				default:
					return false
				}
			}
		}, waitFor, tick, msg)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *consoleClient) signIn(token string) string {
	c.t.Helper()
	resp, body := c.get("/console/login")
	require.Equal(c.t, 200, resp.StatusCode)
	m := csrfField.FindStringSubmatch(body)
	require.NotNil(c.t, m)
	resp, _ = c.post("/console/login", url.Values{"csrf": {m[1]}, "token": {token}, "next": {"/console/"}}, c.srv.URL)
	require.Equal(c.t, http.StatusSeeOther, resp.StatusCode)
	resp, body = c.get("/console/")
	require.Equal(c.t, 200, resp.StatusCode)
	m = csrfField.FindStringSubmatch(body)
	require.NotNil(c.t, m)
	return m[1]
}

func TestConsole(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	c := newConsoleClient(t, srv)

	resp, _ := c.get("/console/")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "signed out: to the sign-in page")
	require.Contains(t, resp.Header.Get("Location"), "/console/login")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")

	// A wrong token is refused and audited.
	_, body := c.get("/console/login")
	m := csrfField.FindStringSubmatch(body)
	resp, _ = c.post("/console/login", url.Values{"csrf": {m[1]}, "token": {"dev-mallory"}}, srv.URL)
	require.Equal(t, 401, resp.StatusCode)
	h.RequireRefused(&broker.APIError{Status: 401, Code: events.CodeUnauthenticated, Message: "console sign-in with an unknown approver token"}, 401, events.CodeUnauthenticated)

	csrf := c.signIn("dev-alice")
	u, _ := url.Parse(srv.URL)
	for _, ck := range c.c.Jar.Cookies(u) {
		require.NotContains(t, ck.Value, "dev-alice", "the token never goes into a cookie")
	}

	// Live updates: a new pending request is announced on the stream.
	changed := c.liveUpdates()
	reqID := events.NewID("req")
	h.EmitPolicy(pendingDecision(reqID, 10*time.Minute))
	changed("no change announced")
	_, body = c.get("/console/live")
	require.Contains(t, body, `data-request="`+reqID+`"`)
	require.Contains(t, body, "reprice the catalogue")
	require.Contains(t, body, "ticket=OPS-1")

	// Actions need the CSRF token and the same origin.
	action := "/console/requests/" + reqID + "/approve"
	form := url.Values{"perm": {"integrations:write"}, "duration": {"1m"}, "requested": {"10m0s"}, "narrow": {"1"}}
	resp, _ = c.post(action, form, srv.URL)
	require.Equal(t, 403, resp.StatusCode, "no CSRF token")
	form.Set("csrf", csrf)
	resp, _ = c.post(action, form, "http://evil.example")
	require.Equal(t, 403, resp.StatusCode, "cross-origin")
	require.Empty(t, h.DecisionsBy(reqID, "human"))

	resp, _ = c.post(action, form, srv.URL)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	d := h.WaitDecision(reqID, "human")
	require.Equal(t, int64(60_000), d.DurationMS, "narrowed in the console")
	_, body = c.get("/console/")
	require.Contains(t, body, `<p class="flash success" id="flash" role="status">Approved: svc-price-optimizer gets integrations:write for 1m.</p>`,
		"the outcome is shown, as a success")

	resp, _ = c.post("/console/logout", url.Values{"csrf": {csrf}}, srv.URL)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = c.get("/console/")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "signed out")
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/requests/req_1?action=approve": "/console/requests/req_1?action=approve",
		"https://evil.example/":                  "/console/",
		"//evil.example/console/":                "/console/",
		"/console/\r\nX: y":                      "/console/",
		"":                                       "/console/",
	} {
		require.Equal(t, want, safeNext(in), in)
	}
}

// TestOpenAPIDescribesEveryRoute keeps api/openapi.yaml true to the routes.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	b, err := os.ReadFile("../../../api/openapi.yaml")
	require.NoError(t, err)
	doc := string(b)
	for _, p := range []string{"/api/v1/pending:", "/api/v1/requests/{id}/approve:", "/api/v1/requests/{id}/deny:",
		"/api/v1/grants:", "/api/v1/grants/{id}/revoke:", "/api/v1/revocations:", "/api/v1/suspensions:",
		"/api/v1/agents/{agent}/reinstate:", "/metrics:"} {
		require.Contains(t, doc, "  "+p)
	}
	src, err := os.ReadFile("web.go")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`"(?:GET|POST) (/api/v1/[^"]+)"`).FindAllStringSubmatch(string(src), -1) {
		require.Contains(t, doc, "  "+m[1]+":", "route %s is not in api/openapi.yaml", m[1])
	}
}
