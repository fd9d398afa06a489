package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/services/approval/web"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

const chromiumPath = "/usr/bin/chromium"

// stepTimeout bounds each browser step after the first, which also starts
// Chromium and so has only the whole test's deadline. Every wait polls the
// page (WaitVisible, require.Eventually) under a generous deadline, so a
// loaded 2-core machine running every package under -race slows the tests
// down instead of failing them.
const stepTimeout = time.Minute

// needChromium skips a browser test where Chromium is missing, except in
// CI, which must have it.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not installed (apt-get install chromium); CI runs this test", chromiumPath)
		}
		t.Fatalf("CI must have %s: %v", chromiumPath, err)
	}
}

// browser is one headless Chromium driving the console, saving a
// screenshot of each state in the test's artifact directory, which go test
// keeps only with -artifacts:
//
//	mkdir -p /tmp/console && cd cmd && go test -race -run 'TestConsole' -v -artifacts -outputdir /tmp/console ./e2e/
//
// puts them under /tmp/console/_artifacts/<random>/<test name>/, numbered
// in order and named after the state they show.
type browser struct {
	t       *testing.T
	ctx     context.Context
	shots   string
	step    int
	started bool
}

func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	needChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	// go test names the artifact directory at random (the test name is
	// lost on the way): a folder named after the test keeps them apart.
	shots := filepath.Join(t.ArtifactDir(), t.Name())
	require.NoError(t, os.MkdirAll(shots, 0o755))
	b := &browser{t: t, ctx: bctx, shots: shots}
	t.Logf("screenshots in %s", b.shots)
	return b
}

// shot saves a full-page screenshot named NN-name.png.
func (b *browser) shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		buf, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		b.step++
		p := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.step, name))
		b.t.Logf("screenshot %s", p)
		return os.WriteFile(p, buf, 0o644)
	})
}

// do runs steps; on failure it saves a screenshot and the page, and fails
// the test.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	// The first call starts the browser, which lives as long as the
	// context of that call; later steps get their own deadline.
	sctx := b.ctx
	if b.started {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(b.ctx, stepTimeout)
		defer cancel()
	}
	if err := chromedp.Do(sctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.location.href`))
		html, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.outerHTML : ""`))
		_ = chromedp.Do(b.ctx, b.shot("failed"))
		b.t.Fatalf("%s: %v\nat %s\n%s", what, err, loc, html)
	}
	b.started = true
}

// text reads an element's text in one evaluation (see value), waiting for
// the element to be there.
func (b *browser) text(sel string) string {
	b.t.Helper()
	b.do("wait for "+sel, chromedp.WaitReady(chromedp.CSS(sel)))
	return eval[string](b, `(function(){const e=document.querySelector(`+jsString(sel)+`); if(!e) throw new Error("no element "+`+jsString(sel)+`); return e.innerText})()`)
}

// value reads an input's value in one evaluation: a live update may
// replace the element between a query and a separate read of it.
func (b *browser) value(sel string) string {
	b.t.Helper()
	return eval[string](b, `(function(){const e=document.querySelector(`+jsString(sel)+`); if(!e) throw new Error("no element "+`+jsString(sel)+`); return e.value})()`)
}

// eval evaluates a JavaScript expression on the page.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(b.t, err, "evaluate %s", js)
	return v
}

func (b *browser) checked(sel string) bool {
	b.t.Helper()
	return eval[bool](b, `document.querySelector(`+jsString(sel)+`).checked`)
}

// signIn signs in on the page the browser shows (the sign-in form).
func (b *browser) signIn(token, shot string) {
	b.t.Helper()
	steps := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), token)}
	if shot != "" {
		steps = append(steps, b.shot(shot))
	}
	steps = append(steps, chromedp.Click(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("approver")),
		chromedp.WaitVisible(chromedp.CSS("#live-status.on")))
	b.do("sign in", steps...)
}

// retype empties the text field sel as a user would (select all, delete:
// chromedp.Clear only resets the default value) and types text.
func (b *browser) retype(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := chromedp.Evaluate[bool](`(function(){var e=document.querySelector(`+jsString(sel)+`);e.focus();e.select();return true})()`)(ctx, tg); err != nil {
			return err
		}
		if _, err := chromedp.KeyEvent("\b")(ctx, tg); err != nil {
			return err
		}
		_, err := chromedp.SendKeys(chromedp.CSS(sel), text)(ctx, tg)
		return err
	})
}

func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// console is a jitd for the browser tests, with the jitctl client.
type console struct {
	app  *allinone.App
	c    cli
	base string
}

// startConsole runs jitd on configFile with extra console options.
func startConsole(t *testing.T, configFile string, opts ...web.Option) console {
	t.Helper()
	bin := bins(t)
	app := allinone.New(allinone.Options{
		ConfigFile: configFile, DataDir: filepath.Join(t.TempDir(), "data"),
		NATSListen: "127.0.0.1:-1", HTTPListen: "127.0.0.1:0", ConsoleOptions: opts,
	}, natstest.Logger(t))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	register(t, app.NATSURL(), filepath.Join(filepath.Dir(app.CredsDir()), "keys"), app.CredsDir())
	return console{app: app, c: cli{t: t, bin: bin, url: app.NATSURL()}, base: "http://" + app.HTTPAddr()}
}

// consoleConfig is examples/jit.yaml with svc-price-optimizer also eligible
// for integrations:read, so that one request can be narrowed to fewer
// permissions.
func consoleConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(exampleConfig(t))
	require.NoError(t, err)
	yml := strings.Replace(string(b), "eligible: [data:write, integrations:write]", "eligible: [data:write, integrations:write, integrations:read]", 1)
	require.NotEqual(t, string(b), yml)
	p := filepath.Join(t.TempDir(), "jit.yaml")
	require.NoError(t, os.WriteFile(p, []byte(yml), 0o600))
	return p
}

// waitRequest waits for the card of a request of agent for perms to appear
// live and returns its request id.
func (b *browser) waitRequest(agent, perms string) string {
	b.t.Helper()
	var id string
	require.Eventually(b.t, func() bool {
		id = eval[string](b, `(function(){var c=[].slice.call(document.querySelectorAll('article.request')).filter(function(a){`+
			`return a.querySelector('.agent').textContent===`+jsString(agent)+`&&a.querySelector('.perms').textContent===`+jsString(perms)+`});`+
			`return c.length?c[0].getAttribute('data-request'):''})()`)
		return id != ""
	}, stepTimeout, 100*time.Millisecond, "a card for %s %s", agent, perms)
	return id
}

// grantOf returns the jit.granted data and the human jit.decided data of
// request reqID.
func grantOf(t *testing.T, url, reqID string) (events.Grant, events.Decision) {
	t.Helper()
	var g events.Grant
	var d events.Decision
	waitFor(t, "grant of "+reqID, stepTimeout, func() bool {
		for _, e := range audit(t, url, "jit.granted.>") {
			if events.RequestID(e) == reqID {
				var err error
				g, err = events.DataAs[events.Grant](e)
				require.NoError(t, err)
				return true
			}
		}
		return false
	})
	for _, e := range audit(t, url, "jit.decided.>") {
		if events.RequestID(e) == reqID && e.ID() == reqID+"/human" {
			var err error
			d, err = events.DataAs[events.Decision](e)
			require.NoError(t, err)
		}
	}
	require.Equal(t, reqID, d.RequestID, "the human decision of %s", reqID)
	return g, d
}

// sessionClock is a clock for the console's sessions that a test moves on.
type sessionClock struct{ offset atomic.Int64 }

func (c *sessionClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *sessionClock) advance(d time.Duration) { c.offset.Add(int64(d)) }
