package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

const chromiumPath = "/usr/bin/chromium"

// TestConsoleInBrowser drives the approver console in Debian's headless
// Chromium against jitd: sign in, watch a pending request appear live while
// an agent's jitctl request blocks, approve it, see jitctl return granted
// and the grant's countdown, revoke it. Each step's screenshot is saved in
// the test's artifact directory, which go test keeps only with -artifacts:
//
//	mkdir -p /tmp/console && cd cmd && go test -race -run TestConsoleInBrowser -v -artifacts -outputdir /tmp/console ./e2e/
//
// puts them under /tmp/console/_artifacts/.... Every wait polls the page
// (WaitVisible, require.Eventually) under a generous deadline, so a loaded
// 2-core machine running every package under -race slows the test down
// instead of failing it.
func TestConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not installed (apt-get install chromium); CI runs this test", chromiumPath)
		}
		t.Fatalf("CI must have %s: %v", chromiumPath, err)
	}
	bin := bins(t)
	app := startJitd(t, filepath.Join(t.TempDir(), "data"), exampleConfig(t))
	c := cli{t: t, bin: bin, url: app.NATSURL()}
	base := "http://" + app.HTTPAddr()
	shots := t.ArtifactDir()
	t.Logf("screenshots in %s", shots)

	// stepTimeout bounds each browser step after the first, which also
	// starts Chromium and so has only the whole test's deadline.
	const stepTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	step, started := 0, false
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			step++
			p := filepath.Join(shots, twoDigits(step)+"-"+name+".png")
			t.Logf("screenshot %s", p)
			return os.WriteFile(p, buf, 0o644)
		})
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		// The first call starts the browser, which lives as long as the
		// context of that call; later steps get their own deadline.
		sctx := browser
		if started {
			var cancel context.CancelFunc
			sctx, cancel = context.WithTimeout(browser, stepTimeout)
			defer cancel()
		}
		if err := chromedp.Do(sctx, steps...); err != nil {
			loc, _ := chromedp.Run(browser, chromedp.Evaluate[string](`document.location.href`))
			html, _ := chromedp.Run(browser, chromedp.Evaluate[string](`document.body ? document.body.outerHTML : ""`))
			_ = chromedp.Do(browser, shot("failed"))
			t.Fatalf("%s: %v\nat %s\n%s", what, err, loc, html)
		}
		started = true
	}
	text := func(sel string) string {
		t.Helper()
		tctx, cancel := context.WithTimeout(browser, stepTimeout)
		defer cancel()
		v, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "text of %s", sel)
		return v
	}

	// 1. Sign in as alice (security-admin).
	do("open the console", chromedp.Navigate(base+"/console/"))
	do("sign in",
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "dev-alice"),
		shot("sign-in"),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("approver")),
		chromedp.WaitVisible(chromedp.CSS("#live-status.on")),
	)
	// Mark this page load: the mark must survive until the request shows.
	_, err := chromedp.Run(browser, chromedp.Evaluate[bool](`window.__sameLoad = true`))
	require.NoError(t, err)
	do("signed in", shot("signed-in"))

	// 2. The agent asks for something that needs a security-admin; jitctl
	// blocks. The request appears without a reload.
	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write",
		"--duration", "5m", "--reason", "sync prices to the storefront", "--context", "ticket=CHG-7", "--json")
	do("pending request appears live", chromedp.WaitVisible(chromedp.CSS("article.request")))
	attr, err := chromedp.Run(browser, chromedp.AttributeValue(chromedp.CSS("article.request"), "data-request"))
	require.NoError(t, err)
	reqID := attr.Value
	sameLoad, err := chromedp.Run(browser, chromedp.Evaluate[bool](`window.__sameLoad === true`))
	require.NoError(t, err)
	require.True(t, sameLoad, "the request appeared through live updates, not a reload")
	require.True(t, strings.HasPrefix(reqID, "req_"), reqID)
	require.Eventually(t, func() bool { return strings.HasSuffix(text("article.request .countdown"), "left") }, stepTimeout, 100*time.Millisecond)
	card := text("article.request")
	for _, want := range []string{"svc-price-optimizer", "integrations:write", "5m0s", "sync prices to the storefront", "ticket=CHG-7"} {
		require.Contains(t, card, want)
	}
	do("pending shot", shot("pending-live"))

	// 3. Approve it; the blocked jitctl returns granted.
	do("approve",
		chromedp.SendKeys(chromedp.CSS(`form.approve input[name="comment"]`), "change CHG-7"),
		chromedp.Click(chromedp.CSS("button.approve-btn")),
		chromedp.WaitVisible(chromedp.ID("flash")),
		shot("approved"),
	)
	res := wait()
	require.Equal(t, 0, res.Code, res.Stderr)
	g := res.JSON(t)
	require.Equal(t, "granted", g["outcome"])
	grantID := g["grant_id"].(string)
	require.Equal(t, events.GrantIDFor(reqID), grantID)

	// 4. The grant is listed with a live countdown.
	grantRow := `tr.grant[data-grant="` + grantID + `"]`
	do("grant listed", chromedp.WaitVisible(chromedp.CSS(grantRow)))
	first := text(grantRow + " .countdown")
	require.Eventually(t, func() bool {
		later := text(grantRow + " .countdown")
		return strings.HasSuffix(later, "left") && later != first
	}, stepTimeout, 200*time.Millisecond, "the countdown ticks from %q", first)
	do("countdown shot", shot("grant-countdown"))

	// 5. Revoke it as an admin: listed under recent revocations, one
	// jit.revoked with reason admin.
	do("revoke",
		chromedp.SendKeys(chromedp.CSS(grantRow+` input[name="comment"]`), "done with the sync"),
		chromedp.Click(chromedp.CSS(grantRow+" button.revoke-btn")),
		chromedp.WaitVisible(chromedp.CSS(`tr.revocation[data-grant="`+grantID+`"]`)),
		shot("revoked"),
	)
	rs := revocationsOf(t, c.url, grantID)
	require.Len(t, rs, 1)
	require.Equal(t, events.RevokedAdmin, rs[0].Reason)
	require.Equal(t, "alice", rs[0].RevokedBy.ID)
	require.Equal(t, "done with the sync", rs[0].Detail)
	require.Equal(t, 1, c.run("check", "--agent", "svc-price-optimizer", "--perm", "integrations:write").Code)
}

func twoDigits(n int) string {
	if n < 10 {
		return "0" + string(rune('0'+n))
	}
	return string(rune('0'+n/10)) + string(rune('0'+n%10))
}
