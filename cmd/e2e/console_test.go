package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/services/approval/web"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// TestConsoleInBrowser drives the approver console in Debian's headless
// Chromium against jitd: sign in, watch a pending request appear live while
// an agent's jitctl request blocks, approve it, see jitctl return granted
// and the grant's countdown, revoke it. Each step's screenshot is saved in
// the test's artifact directory (see browser).
func TestConsoleInBrowser(t *testing.T) {
	b := newBrowser(t, 1280, 1000)
	con := startConsole(t, exampleConfig(t))
	c := con.c

	// 1. Sign in as alice (security-admin).
	b.do("open the console", chromedp.Navigate(con.base+"/console/"))
	b.signIn("dev-alice", "sign-in")
	// Mark this page load: the mark must survive until the request shows.
	_ = eval[bool](b, `window.__sameLoad = true`)
	b.do("signed in", b.shot("signed-in"))

	// 2. The agent asks for something that needs a security-admin; jitctl
	// blocks. The request appears without a reload.
	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write",
		"--duration", "5m", "--reason", "sync prices to the storefront", "--context", "ticket=CHG-7", "--json")
	reqID := b.waitRequest("svc-price-optimizer", "integrations:write")
	require.True(t, eval[bool](b, `window.__sameLoad === true`), "the request appeared through live updates, not a reload")
	require.True(t, strings.HasPrefix(reqID, "req_"), reqID)
	card := "#req-" + reqID
	require.Eventually(t, func() bool { return strings.HasSuffix(b.text(card+" .countdown"), "left") }, stepTimeout, 100*time.Millisecond)
	text := b.text(card)
	for _, want := range []string{"svc-price-optimizer", "integrations:write", "for 5m", "sync prices to the storefront", "ticket=CHG-7",
		"Answer deadline", "/ 100", "security-admin"} {
		require.Contains(t, text, want)
	}
	for _, goSyntax := range []string{"5m0s", "[security-admin]"} {
		require.NotContains(t, text, goSyntax, "no Go formatting shows through")
	}
	require.Equal(t, "Approve integrations:write for 5m", b.text("#ab-"+reqID))
	b.do("pending shot", b.shot("pending-live"))

	// 3. Approve it; the blocked jitctl returns granted.
	b.do("approve",
		chromedp.SendKeys(chromedp.CSS("#ac-"+reqID), "change CHG-7"),
		chromedp.Click(chromedp.CSS("#ab-"+reqID)),
		chromedp.WaitVisible(chromedp.CSS("#flash.success")),
		b.shot("approved"),
	)
	require.Equal(t, "Approved: svc-price-optimizer gets integrations:write for 5m.", b.text("#flash"))
	res := wait()
	require.Equal(t, 0, res.Code, res.Stderr)
	g := res.JSON(t)
	require.Equal(t, "granted", g["outcome"])
	grantID := g["grant_id"].(string)
	require.Equal(t, events.GrantIDFor(reqID), grantID)

	// 4. The grant is listed with a live countdown; the decision is in the
	// history with who, how and the comment.
	grantRow := `tr.grant[data-grant="` + grantID + `"]`
	b.do("grant listed", chromedp.WaitVisible(chromedp.CSS(grantRow)))
	first := b.text(grantRow + " .countdown")
	require.Eventually(t, func() bool {
		later := b.text(grantRow + " .countdown")
		return strings.HasSuffix(later, "left") && later != first
	}, stepTimeout, 200*time.Millisecond, "the countdown ticks from %q", first)
	decision := `li.decision[data-request="` + reqID + `"]`
	b.do("decision listed", chromedp.WaitVisible(chromedp.CSS(decision)))
	text = b.text(decision)
	for _, want := range []string{"svc-price-optimizer", "Approved", "integrations:write for 5m", "by alice", "change CHG-7"} {
		require.Contains(t, text, want)
	}
	require.True(t, eval[bool](b, `window.__sameLoad === true`), "no reload")
	b.do("countdown shot", b.shot("grant-countdown"))

	// 5. Revoke it as an admin: listed under recent revocations, one
	// jit.revoked with reason admin.
	b.do("revoke",
		chromedp.SendKeys(chromedp.CSS(grantRow+` input[name="comment"]`), "done with the sync"),
		chromedp.Click(chromedp.CSS(grantRow+" button.revoke-btn")),
		chromedp.WaitVisible(chromedp.CSS(`tr.revocation[data-grant="`+grantID+`"]`)),
		b.shot("revoked"),
	)
	require.Equal(t, "Revoked: svc-price-optimizer no longer has integrations:write.", b.text("#flash"))
	rs := revocationsOf(t, c.url, grantID)
	require.Len(t, rs, 1)
	require.Equal(t, events.RevokedAdmin, rs[0].Reason)
	require.Equal(t, "alice", rs[0].RevokedBy.ID)
	require.Equal(t, "done with the sync", rs[0].Detail)
	require.Equal(t, 1, c.run("check", "--agent", "svc-price-optimizer", "--perm", "integrations:write").Code)

	// 6. The request's own page says it was decided, by whom, how and why.
	b.do("decided page",
		chromedp.Navigate(con.base+"/console/requests/"+reqID+"?action=approve"),
		chromedp.WaitVisible(chromedp.ID("decided")),
		b.shot("decided-request"),
	)
	text = b.text("#decided")
	for _, want := range []string{"Approved", "svc-price-optimizer got integrations:write for 5m", "by alice", "change CHG-7"} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, b.text("main"), "it below", "a decided request is not offered for approval")
}

// TestConsoleNarrowingSurvivesLiveUpdates: an approver unticks a
// permission, shortens the duration and types a comment; a grant and
// another request arrive and the page updates live; the form stays exactly
// as the approver left it, the button says what will be granted, and the
// grant is exactly that. Approving one card keeps what is typed in another,
// and a refused answer is shown as an error beside its form.
func TestConsoleNarrowingSurvivesLiveUpdates(t *testing.T) {
	b := newBrowser(t, 1280, 1000)
	con := startConsole(t, consoleConfig(t))
	c := con.c

	b.do("open the console", chromedp.Navigate(con.base+"/console/"))
	b.signIn("dev-alice", "")
	_ = eval[bool](b, `window.__sameLoad = true`)

	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--perm", "integrations:read",
		"--duration", "10m", "--reason", "sync prices to the storefront", "--json")
	reqID := b.waitRequest("svc-price-optimizer", "integrations:write, integrations:read")
	card := "#req-" + reqID
	write := card + ` input[name="perm"][value="integrations:write"]`
	read := card + ` input[name="perm"][value="integrations:read"]`
	dur, comment, button := "#dur-"+reqID, "#ac-"+reqID, "#ab-"+reqID
	require.Equal(t, "Approve integrations:write, integrations:read for 10m", b.text(button))

	// Narrow: the button follows every edit.
	b.do("untick integrations:write", chromedp.Click(chromedp.CSS(write)))
	require.Equal(t, "Approve integrations:read for 10m", b.text(button))
	b.do("shorten",
		b.retype(dur, "5m"),
		chromedp.SendKeys(chromedp.CSS(comment), "read only, CHG-9"),
	)
	require.Equal(t, "Approve integrations:read for 5m", b.text(button))
	b.do("narrowed shot", b.shot("narrowed"))

	requireForm := func(when string) {
		t.Helper()
		require.False(t, b.checked(write), "%s: integrations:write stays unticked", when)
		require.True(t, b.checked(read), "%s: integrations:read stays ticked", when)
		require.Equal(t, "5m", b.value(dur), when)
		require.Equal(t, "read only, CHG-9", b.value(comment), when)
		require.Equal(t, "Approve integrations:read for 5m", b.text(button), when)
	}
	// markCard marks the card's element: a live update replaces it.
	markCard := func() { _ = eval[bool](b, `document.querySelector('`+card+`').__old = true`) }
	replaced := func() bool { return eval[bool](b, `document.querySelector('`+card+`').__old !== true`) }

	// A grant arrives (market-intel's data:write is approved at once).
	markCard()
	require.Equal(t, 0, c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "30m", "--reason", "clean up SKUs").Code)
	b.do("grant arrives", chromedp.WaitVisible(chromedp.CSS(`tr.grant`)))
	require.Eventually(t, replaced, stepTimeout, 100*time.Millisecond, "the live update re-rendered the card")
	requireForm("after a grant arrived")

	// Another request arrives.
	markCard()
	wait2 := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write",
		"--duration", "3m", "--reason", "one more sync", "--json")
	otherID := b.waitRequest("svc-price-optimizer", "integrations:write")
	require.Eventually(t, replaced, stepTimeout, 100*time.Millisecond, "the live update re-rendered the card")
	requireForm("after another request arrived")
	b.do("typed in the other card", chromedp.SendKeys(chromedp.CSS("#dc-"+otherID), "typed elsewhere"))
	b.do("after live updates shot", b.shot("after-live-updates"))
	require.True(t, eval[bool](b, `window.__sameLoad === true`), "no reload")

	// Approve: the grant is exactly what the form showed.
	b.do("approve",
		chromedp.Click(chromedp.CSS(button)),
		chromedp.WaitVisible(chromedp.CSS("#flash.success")),
		chromedp.WaitNotPresent(chromedp.CSS(card)),
		b.shot("approved-narrowed"),
	)
	require.Equal(t, "Approved: svc-price-optimizer gets integrations:read for 5m.", b.text("#flash"))
	okBg := eval[string](b, `getComputedStyle(document.querySelector('#flash.success')).backgroundColor`)
	require.Equal(t, "typed elsewhere", b.value("#dc-"+otherID), "acting on one card keeps what is typed in another")
	require.True(t, eval[bool](b, `window.__sameLoad === true`), "no reload")
	res := wait()
	require.Equal(t, 0, res.Code, res.Stderr)
	g, d := grantOf(t, c.url, reqID)
	require.Equal(t, []string{"integrations:read"}, g.Permissions)
	require.Equal(t, 5*time.Minute, g.ExpiresAt.Sub(d.DecidedAt))
	require.Equal(t, []string{"integrations:read"}, d.Permissions)
	require.Equal(t, int64(5*60_000), d.DurationMS)
	require.Equal(t, "read only, CHG-9", d.Comment)
	require.Equal(t, "approved by alice; permissions narrowed to integrations:read; duration shortened to 5m", d.Reason)
	decision := `li.decision[data-request="` + reqID + `"]`
	b.do("decision listed", chromedp.WaitVisible(chromedp.CSS(decision)))
	require.Contains(t, b.text(decision), "Approved, narrowed")
	require.Contains(t, b.text(decision), "Asked for integrations:write, integrations:read for 10m")

	// A refusal: more than was asked for. It is shown as an error beside
	// the form, unlike the success above, and the form keeps its input.
	other := "#req-" + otherID
	b.do("ask for too much",
		b.retype("#dur-"+otherID, "20m"),
		chromedp.Click(chromedp.CSS("#ab-"+otherID)),
		chromedp.WaitVisible(chromedp.CSS(other+" .form-msg.flash.error")),
		b.shot("refused"),
	)
	require.Equal(t, "Refused: Duration 20m must be at least 1s and at most the 3m requested.", b.text(other+" .form-msg"))
	require.Equal(t, "alert", eval[string](b, `document.querySelector('`+other+` .form-msg').getAttribute('role')`))
	errBg := eval[string](b, `getComputedStyle(document.querySelector('`+other+` .form-msg')).backgroundColor`)
	require.NotEqual(t, okBg, errBg, "a refusal does not look like a success")
	require.Equal(t, "20m", b.value("#dur-"+otherID))
	require.Equal(t, "typed elsewhere", b.value("#dc-"+otherID))

	// Deny the other request with the comment typed before.
	b.do("deny", chromedp.Click(chromedp.CSS("#db-"+otherID)), chromedp.WaitNotPresent(chromedp.CSS(other)))
	require.Equal(t, "Denied: svc-price-optimizer does not get integrations:write.", b.text("#flash"))
	res = wait2()
	require.Equal(t, 1, res.Code, res.Stdout+res.Stderr)
	require.Contains(t, res.Stdout, "typed elsewhere")
}

// TestConsoleOnAPhone: at 390x844 nothing is wider than the screen, the
// deadline does not overlap the reason, and every action (approve, deny,
// revoke, reinstate) is reachable and works, approve by keyboard alone.
func TestConsoleOnAPhone(t *testing.T) {
	b := newBrowser(t, 390, 844)
	con := startConsole(t, exampleConfig(t))
	c := con.c
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(con.base+"/console/"))
	b.signIn("dev-alice", "sign-in")

	fits := func(what string) {
		t.Helper()
		w := eval[int](b, `Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)`)
		require.LessOrEqual(t, w, 390, "%s: the page is no wider than the phone", what)
	}
	// reachable: the element, scrolled to, lies within the screen's width.
	reachable := func(sel string) {
		t.Helper()
		b.do("scroll to "+sel, chromedp.ScrollIntoView(chromedp.CSS(sel)))
		r := eval[[]float64](b, `(function(){var r=document.querySelector('`+sel+`').getBoundingClientRect();return [r.left,r.right,r.width,r.height]})()`)
		require.GreaterOrEqual(t, r[0], 0.0, "%s starts on screen", sel)
		require.LessOrEqual(t, r[1], 390.0, "%s ends on screen", sel)
		require.Positive(t, r[2]*r[3], "%s is visible", sel)
	}

	require.Equal(t, 0, c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "30m",
		"--reason", "clean up orphaned SKUs in the spring catalogue before the price run", "--context", "ticket=OPS-42").Code)
	waitA := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "10m",
		"--reason", "sync prices to the storefront for the winter sale, which starts tonight", "--context", "ticket=CHG-7", "--json")
	a := b.waitRequest("svc-price-optimizer", "integrations:write")
	b.do("overview", chromedp.WaitVisible(chromedp.CSS("tr.grant")), b.shot("overview"))
	fits("overview")
	// The deadline sits on its own line, not over the reason.
	overlap := eval[bool](b, `(function(){var a=document.querySelector('#req-`+a+` .deadline').getBoundingClientRect(),`+
		`b=document.querySelector('#req-`+a+` .reason').getBoundingClientRect();`+
		`return !(a.bottom<=b.top||b.bottom<=a.top||a.right<=b.left||b.right<=a.left)})()`)
	require.False(t, overlap, "the countdown does not overlap the reason")

	// Approve by keyboard alone: tab from the comment to the button.
	reachable("#ab-" + a)
	b.do("approve by keyboard",
		chromedp.Focus(chromedp.CSS("#ac-"+a)),
		chromedp.KeyEvent("ok for the sale"),
		chromedp.KeyEvent("\t"),
	)
	require.Equal(t, "ab-"+a, eval[string](b, `document.activeElement.id`), "tab leads from the comment to the approve button")
	outline := eval[string](b, `getComputedStyle(document.activeElement).outlineStyle`)
	require.NotEqual(t, "none", outline, "the focused button shows its focus")
	b.do("focused approve shot", b.shot("approve-focused"))
	b.do("press enter", chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.CSS("#flash.success")), b.shot("approved"))
	res := waitA()
	require.Equal(t, 0, res.Code, res.Stderr)

	// Deny.
	waitB := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "5m",
		"--reason", "another sync", "--json")
	bID := b.waitRequest("svc-price-optimizer", "integrations:write")
	reachable("#db-" + bID)
	b.do("deny",
		chromedp.SendKeys(chromedp.CSS("#dc-"+bID), "not during the sale"),
		chromedp.Click(chromedp.CSS("#db-"+bID)),
		chromedp.WaitNotPresent(chromedp.CSS("#req-"+bID)),
		b.shot("denied"),
	)
	require.Equal(t, 1, waitB().Code)
	fits("after deny")

	// Revoke market-intel's grant.
	row := `tr.grant[data-grant]`
	grantID := eval[string](b, `(function(){var r=[].slice.call(document.querySelectorAll('tr.grant')).filter(function(r){return r.textContent.indexOf('market-intel')>=0});return r.length?r[0].getAttribute('data-grant'):''})()`)
	require.NotEmpty(t, grantID)
	row = `tr.grant[data-grant="` + grantID + `"]`
	reachable(row + " button.revoke-btn")
	b.do("revoke",
		chromedp.SendKeys(chromedp.CSS(row+` input[name="comment"]`), "done"),
		chromedp.Click(chromedp.CSS(row+" button.revoke-btn")),
		chromedp.WaitVisible(chromedp.CSS(`tr.revocation[data-grant="`+grantID+`"]`)),
		b.shot("revoked"),
	)
	require.Len(t, revocationsOf(t, c.url, grantID), 1)
	fits("after revoke")

	// A guardrail suspends market-intel; reinstate it.
	require.Equal(t, 0, c.run("guardrail", "fire", "--agent", "market-intel", "--rule", "price-floor", "--detail", "SKU 1182 at 0.40, floor 2.00").Code)
	sus := `tr.suspension[data-agent="market-intel"]`
	b.do("suspension shown", chromedp.WaitVisible(chromedp.CSS(sus)), b.shot("suspended"))
	fits("with a suspension")
	reachable(sus + " button.reinstate-btn")
	b.do("reinstate",
		chromedp.SendKeys(chromedp.CSS(sus+` input[name="comment"]`), "floor bug fixed"),
		chromedp.Click(chromedp.CSS(sus+" button.reinstate-btn")),
		chromedp.WaitNotPresent(chromedp.CSS(sus)),
		b.shot("reinstated"),
	)
	require.Equal(t, "Reinstated: market-intel is no longer suspended and may ask for access again.", b.text("#flash"))
	require.Equal(t, 0, c.run("check", "--agent", "market-intel", "--perm", "data:read").Code)
	fits("at the end")
}

// TestConsoleSessionExpiresMidApproval: the session ends while the approver
// is narrowing a request and typing a comment; Approve leads to sign-in,
// and after it back to the same request with everything restored; the
// grant is what the form showed.
func TestConsoleSessionExpiresMidApproval(t *testing.T) {
	var clock sessionClock
	b := newBrowser(t, 1280, 1000)
	con := startConsole(t, consoleConfig(t), web.WithSessionClock(clock.now))
	c := con.c

	b.do("open the console", chromedp.Navigate(con.base+"/console/"))
	b.signIn("dev-alice", "")
	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--perm", "integrations:read",
		"--duration", "10m", "--reason", "sync prices to the storefront", "--json")
	reqID := b.waitRequest("svc-price-optimizer", "integrations:write, integrations:read")
	card := "#req-" + reqID
	write := card + ` input[name="perm"][value="integrations:write"]`
	b.do("narrow and comment",
		chromedp.Click(chromedp.CSS(write)),
		b.retype("#dur-"+reqID, "4m"),
		chromedp.SendKeys(chromedp.CSS("#ac-"+reqID), "ticket CHG-11"),
		b.shot("typed"),
	)

	// Eight hours and more pass for the sessions.
	clock.advance(9 * time.Hour)
	b.do("approve with an ended session",
		chromedp.Click(chromedp.CSS("#ab-"+reqID)),
		chromedp.WaitVisible(chromedp.ID("login-error")),
		b.shot("session-ended"),
	)
	require.Contains(t, b.text("#login-error"), "Your session has ended, so nothing was done")
	require.Equal(t, "After signing in you return to request "+reqID+", with what you had typed.", b.text("#login-next"))
	require.Empty(t, audit(t, c.url, "jit.granted.>"), "nothing was approved")

	b.signIn("dev-alice", "")
	require.True(t, strings.HasSuffix(eval[string](b, `location.pathname`), "/console/requests/"+reqID), "back at the request")
	b.do("back with the draft", chromedp.WaitVisible(chromedp.CSS("#ab-"+reqID)), b.shot("back-with-draft"))
	require.False(t, b.checked(write), "integrations:write is still unticked")
	require.Equal(t, "4m", b.value("#dur-"+reqID))
	require.Equal(t, "ticket CHG-11", b.value("#ac-"+reqID))
	require.Equal(t, "Approve integrations:read for 4m", b.text("#ab-"+reqID))

	b.do("approve", chromedp.Click(chromedp.CSS("#ab-"+reqID)), chromedp.WaitVisible(chromedp.CSS("#flash.success")),
		chromedp.WaitVisible(chromedp.ID("decided")), b.shot("approved"))
	require.Equal(t, 0, wait().Code)
	g, d := grantOf(t, c.url, reqID)
	require.Equal(t, []string{"integrations:read"}, g.Permissions)
	require.Equal(t, 4*time.Minute, g.ExpiresAt.Sub(d.DecidedAt))
	require.Equal(t, "ticket CHG-11", d.Comment)
}

// TestConsoleOperatorIsToldWhy: an operator who follows a notification's
// approve link to a request that needs a security-admin is told she cannot
// answer it and why, with no form; once alice has decided, the same page
// says who decided, how and why.
func TestConsoleOperatorIsToldWhy(t *testing.T) {
	b := newBrowser(t, 1280, 1000)
	con := startConsole(t, exampleConfig(t))
	c := con.c

	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "10m",
		"--reason", "sync prices to the storefront", "--json")
	var reqID string
	waitFor(t, "request pending", stepTimeout, func() bool {
		for _, p := range c.as("dev-alice").run("pending", "--json").JSONLines(t) {
			reqID, _ = p["request_id"].(string)
		}
		return reqID != ""
	})
	b.do("open the approve link", chromedp.Navigate(con.base+"/console/requests/"+reqID+"?action=approve"))
	b.signIn("dev-carol", "")
	b.do("operator view", chromedp.WaitVisible(chromedp.CSS("#req-"+reqID)), b.shot("operator-cannot-answer"))
	main := b.text("main")
	require.Contains(t, main, "you cannot answer it: it needs the role security-admin; you hold operator")
	require.NotContains(t, main, "it below")
	require.Equal(t, 0, eval[int](b, `document.querySelectorAll('form.approve, form.deny').length`))

	require.Equal(t, 0, c.as("dev-alice").run("approve", reqID, "--perm", "integrations:write", "--duration", "2m", "--comment", "change CHG-7").Code)
	require.Equal(t, 0, wait().Code)
	b.do("decided live", chromedp.WaitVisible(chromedp.ID("decided")), b.shot("decided"))
	text := b.text("#decided")
	for _, want := range []string{"Approved, narrowed", "svc-price-optimizer got integrations:write for 2m", "by alice", "change CHG-7",
		"duration shortened to 2m"} {
		require.Contains(t, text, want)
	}
	require.Contains(t, b.text("main"), "is not waiting for approval any more")
}

// TestConsoleAfterARestart: jitd stops while an approver is typing; the page
// says it cannot reach the server instead of showing stale data as live;
// once jitd is back (sessions do not survive a restart) the page goes to
// sign-in, and after it back to the request with what was typed.
func TestConsoleAfterARestart(t *testing.T) {
	b := newBrowser(t, 1280, 1000)
	dataDir := filepath.Join(t.TempDir(), "data")
	start := func(httpAddr string) *allinone.App {
		app := allinone.New(allinone.Options{ConfigFile: exampleConfig(t), DataDir: dataDir,
			NATSListen: "127.0.0.1:-1", HTTPListen: httpAddr}, natstest.Logger(t))
		require.NoError(t, app.Run(context.Background()))
		t.Cleanup(app.Close)
		register(t, app.NATSURL(), filepath.Join(dataDir, "keys"), app.CredsDir())
		return app
	}
	app := start("127.0.0.1:0")
	addr := app.HTTPAddr()
	c := cli{t: t, bin: bins(t), url: app.NATSURL()}

	b.do("open the console", chromedp.Navigate("http://"+addr+"/console/"))
	b.signIn("dev-alice", "")
	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "10m",
		"--reason", "sync prices to the storefront", "--json")
	reqID := b.waitRequest("svc-price-optimizer", "integrations:write")
	b.do("type a comment", chromedp.SendKeys(chromedp.CSS("#ac-"+reqID), "after the restart"))

	app.Close()
	b.do("offline", chromedp.WaitVisible(chromedp.ID("stale-note")), chromedp.WaitVisible(chromedp.CSS("#live-status.off")),
		chromedp.WaitVisible(chromedp.CSS("#live.stale")), b.shot("offline"))

	start(addr)
	b.do("sign-in after the restart", chromedp.WaitVisible(chromedp.ID("token")), b.shot("sign-in-after-restart"))
	require.Equal(t, "/console/login", eval[string](b, `location.pathname`))
	b.signIn("dev-alice", "")
	require.Equal(t, "/console/requests/"+reqID, eval[string](b, `location.pathname`), "back at the request being answered")
	b.do("restored", chromedp.WaitVisible(chromedp.CSS("#ac-"+reqID)), b.shot("restored"))
	require.Equal(t, "after the restart", b.value("#ac-"+reqID))
	// The waiting jitctl lost its server with the first jitd (its NATS port
	// changed): its outcome is not what this test is about.
	_ = wait
}
