package web

import (
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/approval"
	"github.com/stretchr/testify/require"
)

// twoPermissions is a pending request for integrations:write and
// integrations:read for 10m that needs a security-admin.
func twoPermissions(reqID string) events.Decision {
	d := pendingDecision(reqID, 10*time.Minute)
	d.Permissions = []string{"integrations:write", "integrations:read"}
	d.Request.Permissions = d.Permissions
	d.Risk = &events.Risk{Score: 35, Parts: []events.RiskPart{{Name: "sensitivity", Points: 35}}}
	return d
}

// postAccept posts form to path with an Accept header (the console's
// script asks for JSON).
func (c *consoleClient) postAccept(path string, form url.Values, accept string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest("POST", c.srv.URL+path, strings.NewReader(form.Encode()))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", c.srv.URL)
	req.Header.Set("Accept", accept)
	resp, err := c.c.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp, string(b)
}

var (
	flashRE  = regexp.MustCompile(`<p class="flash (\w+)" id="flash" role="(\w+)">([^<]*)</p>`)
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// flashOf returns the kind, role and text of the page's message.
func flashOf(t *testing.T, body string) (kind, role, text string) {
	t.Helper()
	m := flashRE.FindStringSubmatch(body)
	require.NotNil(t, m, "no message on the page:\n%s", body)
	return m[1], m[2], html.UnescapeString(m[3])
}

// TestConsoleAnswersAreWordedForPeople: an approval's message says who gets
// what for how long; a refusal (an operator forging an answer to a request
// that needs a security-admin) is an error, styled and announced as one,
// with no Go formatting; the same answers come as JSON for the script.
func TestConsoleAnswersAreWordedForPeople(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	reqID := events.NewID("req")
	h.EmitPolicy(twoPermissions(reqID))
	h.WaitPending(agentOptimizer, reqID)
	action := "/console/requests/" + reqID + "/approve"

	carol := newConsoleClient(t, srv)
	csrf := carol.signIn("dev-carol")
	resp, _ := carol.post(action, url.Values{"csrf": {csrf}, "narrow": {"1"}, "perm": {"integrations:read"}, "duration": {"10m"}, "back": {"/console/"}}, srv.URL)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	_, page := carol.get("/console/")
	kind, role, text := flashOf(t, page)
	require.Equal(t, "error", kind)
	require.Equal(t, "alert", role)
	require.Equal(t, "Refused: To approve request "+reqID+" an approver needs the role security-admin; carol holds operator.", text)
	resp, body := carol.postAccept(action, url.Values{"csrf": {csrf}, "perm": {"integrations:read"}}, "application/json")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	var j map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	require.Equal(t, "error", j["kind"])
	require.Equal(t, events.CodeForbidden, j["code"])
	require.Equal(t, text, j["message"])

	// The page carol sees names the request's state without Go syntax.
	require.Contains(t, page, "You cannot answer this request: it needs the role security-admin; you hold operator.")
	require.Contains(t, page, "35 / 100")
	require.Contains(t, page, "for <span class=\"duration\">10m</span>")
	for _, goSyntax := range []string{"10m0s", "[security-admin]", "[operator]"} {
		require.NotContains(t, page, goSyntax)
	}

	// alice narrows, by the script's fetch: JSON, worded for people.
	alice := newConsoleClient(t, srv)
	csrf = alice.signIn("dev-alice")
	resp, body = alice.postAccept(action, url.Values{"csrf": {csrf}, "narrow": {"1"}, "perm": {"integrations:read"}, "duration": {"4m"},
		"comment": {"read only"}}, "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	require.Equal(t, "success", j["kind"])
	require.Equal(t, "Approved: svc-price-optimizer gets integrations:read for 4m.", j["message"])
	d := h.WaitDecision(reqID, "human")
	require.Equal(t, []string{"integrations:read"}, d.Permissions)
	require.Equal(t, int64(4*60_000), d.DurationMS)
	require.Equal(t, "approved by alice; permissions narrowed to integrations:read; duration shortened to 4m", d.Reason)
}

// TestConsoleSendsTheFormExactly: the duration is sent as the form shows
// it, even when it equals the request's, and unticked permissions are left
// out; a form with every permission unticked is refused, not widened.
func TestConsoleSendsTheFormExactly(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	reqID := events.NewID("req")
	h.EmitPolicy(twoPermissions(reqID))
	h.WaitPending(agentOptimizer, reqID)
	alice := newConsoleClient(t, srv)
	csrf := alice.signIn("dev-alice")
	action := "/console/requests/" + reqID + "/approve"

	resp, body := alice.postAccept(action, url.Values{"csrf": {csrf}, "narrow": {"1"}, "duration": {"10m"}}, "application/json")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
	require.Contains(t, body, "tick at least one permission")
	require.Empty(t, h.DecisionsBy(reqID, "human"))

	resp, body = alice.postAccept(action, url.Values{"csrf": {csrf}, "narrow": {"1"}, "perm": {"integrations:write", "integrations:read"},
		"duration": {"10m"}}, "application/json")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	d := h.WaitDecision(reqID, "human")
	require.Equal(t, []string{"integrations:write", "integrations:read"}, d.Permissions)
	require.Equal(t, int64(10*60_000), d.DurationMS)
	require.Equal(t, "approved by alice", d.Reason, "nothing narrowed")
}

// TestConsoleErrorsArePages: a stale CSRF token, an unknown page and an
// answer from an ended session are pages in the console's style (JSON
// only for the script), never raw JSON or bare text.
func TestConsoleErrorsArePages(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	reqID := events.NewID("req")
	h.EmitPolicy(pendingDecision(reqID, 10*time.Minute))
	h.WaitPending(agentOptimizer, reqID)
	c := newConsoleClient(t, srv)
	c.signIn("dev-alice")

	resp, body := c.post("/console/requests/"+reqID+"/approve", url.Values{"csrf": {"stale"}, "comment": {"ok"}}, srv.URL)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, body, `<link rel="stylesheet" href="/console/static/console.css">`)
	require.Contains(t, body, `<p class="flash error" id="error-message" role="alert">This page was out of date`)
	require.Contains(t, body, `href="/console/requests/`+reqID+`"`, "leads back to the request")
	require.NotContains(t, body, `"code"`)
	h.RequireRefused(&broker.APIError{Status: 403, Code: events.CodeForbidden,
		Message: "this page was out of date (its security token is from an earlier session): reload the console and try again"}, 403, events.CodeForbidden)
	_, page := c.get("/console/requests/" + reqID)
	require.Contains(t, page, `value="ok"`, "what was typed is kept for the page the error links to")

	resp, body = c.postAccept("/console/requests/"+reqID+"/approve", url.Values{"csrf": {"stale"}}, "application/json")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Contains(t, body, "out of date")

	resp, body = c.get("/console/nowhere")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, body, `id="error-title">Not found</h2>`)
	resp, body = c.postAccept("/console/", url.Values{}, "text/html")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, body, `class="flash error"`)

	resp, body = c.get("/console/static/nothing.js")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, body, `id="error-title">Not found</h2>`)
	resp, _ = c.get("/console/static/console.css")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	resp, _ = c.get("/console/requests/" + reqID + "/approve")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode, "a copied action link leads to the request")
	require.Equal(t, "/console/requests/"+reqID+"?action=approve", resp.Header.Get("Location"))

	signedOut := newConsoleClient(t, srv)
	resp, body = signedOut.get("/console/live")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, body, `class="flash error"`)
}

// TestConsoleEndedSessionKeepsWhatWasTyped: an answer posted after the
// session ended does nothing and leads to sign-in carrying what was typed;
// after signing in the request's page shows it again. The script gets 401
// and where to sign in.
func TestConsoleEndedSessionKeepsWhatWasTyped(t *testing.T) {
	h := newHarness(t)
	var offset atomic.Int64
	_, srv := h.startHTTPWith(WithSessionClock(func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }))
	reqID := events.NewID("req")
	h.EmitPolicy(twoPermissions(reqID))
	h.WaitPending(agentOptimizer, reqID)
	c := newConsoleClient(t, srv)
	csrf := c.signIn("dev-alice")
	offset.Store(int64(sessionTTL + time.Minute))

	action := "/console/requests/" + reqID + "/approve"
	resp, body := c.postAccept(action, url.Values{"csrf": {csrf}}, "application/json")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	var j map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	require.Equal(t, "/console/login?next=%2Fconsole%2Frequests%2F"+reqID, j["login"])

	form := url.Values{"csrf": {csrf}, "narrow": {"1"}, "perm": {"integrations:read"}, "duration": {"3m"}, "comment": {"ticket <CHG-11>"}}
	_, body = c.post(action, form, "https://evil.example")
	require.NotContains(t, body, "draft_", "another site's post fills in nothing")
	resp, body = c.post(action, form, srv.URL)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, body, "Your session has ended, so nothing was done.")
	require.Contains(t, body, "After signing in you return to request "+reqID+", with what you had typed.")
	require.Empty(t, h.DecisionsBy(reqID, "human"))
	fields := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		fields.Add(m[1], html.UnescapeString(m[2]))
	}
	require.Equal(t, "/console/requests/"+reqID, fields.Get("next"))
	require.Equal(t, "ticket <CHG-11>", fields.Get("draft_comment"))
	require.Equal(t, []string{"integrations:read"}, fields["draft_perm"])

	offset.Store(0)
	fields.Set("token", "dev-alice")
	resp, _ = c.post("/console/login", fields, srv.URL)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/console/requests/"+reqID, resp.Header.Get("Location"))
	_, page := c.get("/console/requests/" + reqID)
	require.Contains(t, page, `value="ticket &lt;CHG-11&gt;"`)
	require.Contains(t, page, `name="duration" value="3m"`)
	require.Regexp(t, `value="integrations:write" id="perm-[^"]+"> integrations:write`, page, "integrations:write stays unticked")
	require.Regexp(t, `value="integrations:read" id="perm-[^"]+" checked> integrations:read`, page)
	require.Contains(t, page, ">Approve integrations:read for 3m</button>")
	kind, _, text := flashOf(t, page)
	require.Equal(t, "info", kind)
	require.Contains(t, text, "What you had typed is back; nothing was sent yet.")
	_, page = c.get("/console/requests/" + reqID)
	require.Contains(t, page, `name="duration" value="10m"`, "the draft is shown once")
}

// TestConsoleRequestPageSaysHowItEnded: a decided request's page says it
// was decided, by whom, when, how and why; the history lists it; an
// operator is never told to approve below.
func TestConsoleRequestPageSaysHowItEnded(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	reqID := events.NewID("req")
	h.EmitPolicy(twoPermissions(reqID))
	h.WaitPending(agentOptimizer, reqID)

	carol := newConsoleClient(t, srv)
	carol.signIn("dev-carol")
	_, page := carol.get("/console/requests/" + reqID + "?action=approve")
	require.Contains(t, page, "is waiting for approval, but you cannot answer it: it needs the role security-admin; you hold operator.")
	require.NotContains(t, page, "it below")
	require.NotContains(t, page, `<form method="post" action="/console/requests/`)

	alice := newConsoleClient(t, srv)
	alice.signIn("dev-alice")
	_, page = alice.get("/console/requests/" + reqID + "?action=approve")
	require.Contains(t, page, "is waiting for your answer: check it and approve it below.")

	_, err := h.Deny("dev-alice", reqID, "not during the freeze")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, page = carol.get("/console/requests/" + reqID)
		return strings.Contains(page, `id="decided"`)
	}, waitFor, tick)
	for _, want := range []string{"is not waiting for approval any more", "Denied: svc-price-optimizer's request for integrations:write, integrations:read for 10m",
		"Nothing was granted", "by alice, <time", "“not during the freeze”", "denied by alice: not during the freeze"} {
		require.Contains(t, page, want)
	}
	require.NotContains(t, page, "it below")
	_, page = carol.get("/console/")
	require.Regexp(t, `(?s)<li class="decision how-denied" data-request="`+reqID+`">.*Denied.*by alice.*not during the freeze`, page)

	// A request that never existed.
	gone := events.NewID("req")
	_, page = carol.get("/console/requests/" + gone)
	require.Contains(t, page, "No request "+gone+" is waiting for approval")
}

// TestConsoleHistoryNamesHowEachRequestEnded: the recent decisions say how
// each request that waited for a human ended, by whom and why; decisions
// of the policy alone are not listed.
func TestConsoleHistoryNamesHowEachRequestEnded(t *testing.T) {
	h := newHarness(t)
	_, srv := h.startHTTP()
	alice := events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}
	bob := events.Actor{Kind: events.ActorApprover, ID: "bob", Roles: []string{"org-admin"}}
	end := func(how string, mutate func(*events.Decision)) string {
		id := events.NewID("req")
		d := twoPermissions(id)
		d.DecidedAt = time.Now().UTC()
		mutate(&d)
		h.Emit(events.DecisionEventID(id, how), d)
		return id
	}
	narrowed := end("human", func(d *events.Decision) {
		d.Outcome, d.Mode, d.DecidedBy, d.Comment = events.OutcomeApproved, events.ModeHuman, bob, "read is enough"
		d.Permissions, d.DurationMS = []string{"integrations:read"}, 5*60_000
		d.Reason = "approved by alice and bob; permissions narrowed to integrations:read; duration shortened to 5m"
	})
	for _, v := range []events.Approval{
		{RequestID: narrowed, Agent: agentOptimizer, Approver: alice, Permissions: []string{"integrations:read"}, DurationMS: 10 * 60_000, Approvals: 1, Required: 2, ApprovedAt: time.Now().UTC()},
		{RequestID: narrowed, Agent: agentOptimizer, Approver: bob, Permissions: []string{"integrations:read"}, DurationMS: 5 * 60_000, Approvals: 2, Required: 2, ApprovedAt: time.Now().UTC()},
	} {
		_, _, err := h.Policy.Emit(ctxT(t), approval.ApprovedEventID(v.RequestID, v.Approver.ID), events.TypeApproved, v.Agent, v, events.WithRequestID(v.RequestID))
		require.NoError(t, err)
	}
	denied := end("human", func(d *events.Decision) {
		d.Outcome, d.Mode, d.DecidedBy, d.Comment, d.Reason = events.OutcomeDenied, events.ModeHuman, alice, "freeze", "denied by alice: freeze"
	})
	timedOut := end("timeout", func(d *events.Decision) {
		d.Outcome, d.Mode, d.Reason = events.OutcomeDenied, events.ModeTimeout, "approval timed out"
	})
	withdrawn := end("withdrawn", func(d *events.Decision) {
		d.Outcome, d.Mode, d.Reason = events.OutcomeDenied, events.ModeWithdrawn, "withdrawn by the agent"
	})
	suspended := end("suspended", func(d *events.Decision) {
		d.Outcome, d.Mode, d.Reason = events.OutcomeDenied, events.ModeSuspended, "agent svc-price-optimizer was suspended by guardrail price-floor before an approver answered"
		d.DecidedBy = events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}
	})
	policyOnly := end("policy", func(d *events.Decision) {
		d.Outcome, d.Mode, d.ApproverRoles = events.OutcomeDenied, events.ModePolicy, nil
	})

	c := newConsoleClient(t, srv)
	c.signIn("dev-carol")
	var page string
	require.Eventually(t, func() bool {
		_, page = c.get("/console/")
		return strings.Contains(page, `data-request="`+suspended+`"`)
	}, waitFor, tick)
	item := func(id string) string {
		t.Helper()
		m := regexp.MustCompile(`(?s)<li class="decision ([^"]+)" data-request="` + id + `">(.*?)</li>`).FindStringSubmatch(page)
		require.NotNil(t, m, "no decision %s", id)
		return m[1] + " " + strings.Join(strings.Fields(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(html.UnescapeString(m[2]), "")), " ")
	}
	require.Regexp(t, `^how-narrowed svc-price-optimizer · Approved, narrowed · integrations:read for 5m by alice and bob · .* Asked for integrations:write, integrations:read for 10m “read is enough”$`, item(narrowed))
	require.Regexp(t, `^how-denied svc-price-optimizer · Denied · integrations:write, integrations:read for 10m by alice · .*“freeze”$`, item(denied))
	require.Regexp(t, `^how-timed-out .* Timed out .* nobody answered before the deadline · .* approval timed out$`, item(timedOut))
	require.Regexp(t, `^how-withdrawn .* Withdrawn .* withdrawn by the agent svc-price-optimizer · `, item(withdrawn))
	require.Regexp(t, `^how-suspended .* Denied, agent suspended .* the agent was suspended by guardrail price-floor · .* before an approver answered$`, item(suspended))
	require.NotContains(t, page, policyOnly, "a decision of the policy alone is not a human's")
	// Newest first.
	require.Less(t, strings.Index(page, `data-request="`+suspended+`"`), strings.Index(page, `data-request="`+narrowed+`"`))

	_, page = c.get("/console/requests/" + narrowed)
	for _, want := range []string{"Approved, narrowed", "svc-price-optimizer got integrations:read for 5m (less than asked)", "by alice and bob",
		"alice approved integrations:read for 10m", "bob approved integrations:read for 5m"} {
		require.Contains(t, page, want)
	}
}
