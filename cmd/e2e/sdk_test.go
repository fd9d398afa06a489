package e2e

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// agentConn dials url the way an agent should: with its own credential,
// reconnecting forever.
func agentConn(t testing.TB, url, agent string) *nats.Conn {
	t.Helper()
	return connectAs(t, url, auth.Principal{Kind: auth.KindAgent, ID: agent}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// operatorConn dials url with the operator's credential (approvers name
// themselves with their token on it).
func operatorConn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	return connectAs(t, url, auth.DefaultOperator, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// fireGuardrail reports a violation as the example's guardrail source does:
// a CloudEvent published on guardrail.fired.<agent> with its credential.
func fireGuardrail(t *testing.T, url, agent, rule, detail string) events.Event {
	t.Helper()
	nc := connectAs(t, url, auth.Principal{Kind: auth.KindGuardrail, ID: "pricing-guard"})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	e, err := events.New(events.NewID("grd"), events.TypeGuardrailFired, "/test/guardrail", agent,
		events.GuardrailFired{Agent: agent, Rule: rule, Detail: detail, FiredAt: time.Now().UTC()})
	require.NoError(t, err)
	m, err := broker.ToMsg(events.Subject(events.TypeGuardrailFired, agent), e)
	require.NoError(t, err)
	_, err = js.PublishMsg(t.Context(), m)
	require.NoError(t, err)
	return e
}

func sdkClient(t testing.TB, url, agent string) *sdk.Client {
	t.Helper()
	c, err := sdk.New(agentConn(t, url, agent), agent, sdk.WithLogger(bufferedLogger(t)))
	require.NoError(t, err)
	return c
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// decisionsOf returns the jit.decided data of one request.
func decisionsOf(t *testing.T, url, requestID string) []events.Decision {
	var out []events.Decision
	for _, e := range audit(t, url, "jit.decided.>") {
		if events.RequestID(e) != requestID {
			continue
		}
		d, err := events.DataAs[events.Decision](e)
		require.NoError(t, err)
		out = append(out, d)
	}
	return out
}

func TestSDKGrantDoneAndRevoked(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	c := sdkClient(t, app.NATSURL(), "market-intel")
	ctx := t.Context()

	g, err := c.Request(ctx, []string{"data:write"}, 10*time.Minute, "clean up orphaned SKUs", map[string]string{"ticket": "OPS-42"})
	require.NoError(t, err)
	require.Equal(t, []string{"data:write"}, g.Permissions())
	require.WithinDuration(t, time.Now().Add(10*time.Minute), g.ExpiresAt(), 5*time.Second)
	require.Equal(t, "OPS-42", g.Info().Context["ticket"])
	require.False(t, closed(g.Revoked()))
	require.Empty(t, g.Reason())

	require.NoError(t, g.Done(ctx))
	require.True(t, closed(g.Revoked()))
	require.Equal(t, events.RevokedCompleted, g.Reason())
	revs := revocationsOf(t, app.NATSURL(), g.ID())
	require.Len(t, revs, 1)
	require.Equal(t, events.RevokedCompleted, revs[0].Reason)
	require.NoError(t, g.Done(ctx), "done twice is fine")
}

func TestSDKExpiryClosesRevoked(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	c := sdkClient(t, app.NATSURL(), "market-intel")
	g, err := c.Request(t.Context(), []string{"data:write"}, time.Second, "short task", nil)
	require.NoError(t, err)
	select {
	case <-g.Revoked():
	case <-time.After(10 * time.Second):
		t.Fatal("Revoked not closed at expiry")
	}
	require.Equal(t, events.RevokedExpired, g.Reason())
	require.False(t, time.Now().Before(g.ExpiresAt()), "closed at, not before, expires_at")
}

func TestSDKDeniedAndRefused(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	c := sdkClient(t, app.NATSURL(), "svc-price-optimizer")
	ctx := t.Context()

	_, err := c.Request(ctx, []string{"data:write"}, 25*time.Minute, "reprice everything", nil)
	require.ErrorIs(t, err, sdk.ErrDenied)
	var de *sdk.DeniedError
	require.ErrorAs(t, err, &de)
	require.Equal(t, events.ModePolicy, de.Mode)
	require.Equal(t, "optimizer-write-low-risk", de.Rule)
	require.Contains(t, de.Reason, "20m")

	_, err = c.Request(ctx, []string{"data:delete"}, time.Minute, "not eligible", nil)
	require.ErrorIs(t, err, sdk.ErrRefused)
	var re *sdk.RefusedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, events.CodeNotEligible, re.Code)
	require.NotErrorIs(t, err, sdk.ErrSuspended)
}

func TestSDKGuardrailClosesRevokedAndSuspends(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	url := app.NATSURL()
	c := sdkClient(t, url, "svc-price-optimizer")
	ctx := t.Context()
	g, err := c.Request(ctx, []string{"data:write"}, 10*time.Minute, "reprice winter catalogue", nil)
	require.NoError(t, err)

	fireGuardrail(t, url, "svc-price-optimizer", "price-floor", "SKU 1182 at 0.40")
	select {
	case <-g.Revoked():
	case <-time.After(10 * time.Second):
		t.Fatal("Revoked not closed by the guardrail")
	}
	require.Equal(t, events.RevokedGuardrail, g.Reason())

	_, err = c.Request(ctx, []string{"data:write"}, time.Minute, "retry", nil)
	require.ErrorIs(t, err, sdk.ErrSuspended)
	require.ErrorIs(t, err, sdk.ErrRefused)
}

// TestSDKWithdrawPending cancels a request that waits for a human: the
// request is withdrawn (audited) and denied with mode withdrawn, and no
// approver can approve it afterwards.
func TestSDKWithdrawPending(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	url := app.NATSURL()
	c := sdkClient(t, url, "svc-price-optimizer")
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, []string{"integrations:write"}, 10*time.Minute, "sync prices to the storefront", nil)
		errc <- err
	}()
	var requestID string
	require.Eventually(t, func() bool {
		for _, e := range audit(t, url, "jit.decided.svc-price-optimizer") {
			if d, err := events.DataAs[events.Decision](e); err == nil && d.Outcome == events.OutcomePending {
				requestID = d.RequestID
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "pending decision")
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)

	require.Eventually(t, func() bool {
		for _, d := range decisionsOf(t, url, requestID) {
			if d.Outcome == events.OutcomeDenied && d.Mode == events.ModeWithdrawn {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "denied as withdrawn")
	ws := audit(t, url, "jit.withdrawn.svc-price-optimizer")
	require.Len(t, ws, 1)
	require.Equal(t, events.WithdrawnEventID(requestID), ws[0].ID())

	var res broker.ActionResult
	err := broker.Call(t.Context(), operatorConn(t, url), broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: requestID}, &res)
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae, "a withdrawn request cannot be approved")
	require.Contains(t, []int{404, 409}, ae.Status)
	require.Empty(t, audit(t, url, "jit.granted.svc-price-optimizer"))
}

// TestWithdrawAfterGrant withdraws a request whose grant was already made
// (the race of a cancel with the grant): the revoker ends the grant with
// reason withdrawn.
func TestWithdrawAfterGrant(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	url := app.NATSURL()
	c := sdkClient(t, url, "market-intel")
	g, err := c.Request(t.Context(), []string{"data:write"}, 10*time.Minute, "task", nil)
	require.NoError(t, err)
	var res broker.ActionResult
	require.NoError(t, broker.Call(t.Context(), agentConn(t, url, "market-intel"), broker.APIWithdraw, "",
		broker.WithdrawInput{RequestID: g.RequestID(), Agent: "market-intel"}, &res))
	require.Equal(t, "withdrawn", res.Outcome)
	select {
	case <-g.Revoked():
	case <-time.After(10 * time.Second):
		t.Fatal("grant of a withdrawn request not revoked")
	}
	require.Equal(t, events.RevokedWithdrawn, g.Reason())
	revs := revocationsOf(t, url, g.ID())
	require.Len(t, revs, 1)
	require.Equal(t, events.RevokedWithdrawn, revs[0].Reason)

	err = broker.Call(t.Context(), agentConn(t, url, "market-intel"), broker.APIWithdraw, "", broker.WithdrawInput{RequestID: "../x", Agent: "market-intel"}, nil)
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 400, ae.Status)
}

// TestSDKSurvivesRestart restarts the whole system (broker and every
// service) while a request waits for a human; the approval after the
// restart reaches the waiting Request.
func TestSDKSurvivesRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	dataDir := filepath.Join(t.TempDir(), "data")
	opts := allinone.Options{ConfigFile: exampleConfig(t), DataDir: dataDir, NATSListen: "127.0.0.1:" + strconv.Itoa(port)}
	app := allinone.New(opts, natstest.Logger(t))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(func() { app.Close() })
	url := app.NATSURL()
	register(t, url, filepath.Join(dataDir, "keys"), app.CredsDir())
	checkContract(t, url)

	c := sdkClient(t, url, "svc-price-optimizer")
	type out struct {
		g   *sdk.Grant
		err error
	}
	done := make(chan out, 1)
	go func() {
		g, err := c.Request(t.Context(), []string{"integrations:write"}, 5*time.Minute, "sync prices", nil)
		done <- out{g, err}
	}()
	var requestID string
	require.Eventually(t, func() bool {
		for _, e := range audit(t, url, "jit.decided.svc-price-optimizer") {
			if d, err := events.DataAs[events.Decision](e); err == nil && d.Outcome == events.OutcomePending {
				requestID = d.RequestID
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)

	app.Close()
	app = allinone.New(allinone.Options{DataDir: dataDir, NATSListen: opts.NATSListen}, natstest.Logger(t))
	require.NoError(t, app.Run(context.Background()))

	nc := operatorConn(t, url)
	require.Eventually(t, func() bool {
		var res broker.ActionResult
		return broker.Call(t.Context(), nc, broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: requestID, Comment: "ok"}, &res) == nil
	}, 10*time.Second, 50*time.Millisecond, "approve after restart")
	select {
	case o := <-done:
		require.NoError(t, o.err)
		require.Equal(t, events.GrantIDFor(requestID), o.g.ID())
	case <-time.After(20 * time.Second):
		t.Fatal("Request did not return after the restart")
	}
	require.False(t, errors.Is(t.Context().Err(), context.Canceled))
}

// TestSDKSurvivesServiceRestarts runs each service as its own process
// against a standalone nats-server. While an SDK call waits, one service is
// killed (SIGKILL) and started again — the requester, the policy service,
// the approval service, the revoker — and finally the broker itself, which
// drops the agent's connection: every waiting call returns its outcome.
func TestSDKSurvivesServiceRestarts(t *testing.T) {
	bin := bins(t)
	dep := deployExternal(t, bin, exampleConfig(t))
	url, nsrv, svc := dep.url, dep.server, dep.services
	nc := agentConn(t, url, "market-intel")
	checkContract(t, url)
	c, err := sdk.New(nc, "market-intel", sdk.WithLogger(bufferedLogger(t)), sdk.WithCallTimeout(500*time.Millisecond))
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	g, err := c.Request(wctx, []string{"data:write"}, time.Minute, "warm up", nil)
	cancel()
	require.NoError(t, err, "services answer")
	require.NoError(t, g.Done(t.Context()))

	type out struct {
		g   *sdk.Grant
		err error
	}
	ask := func(c *sdk.Client, perm, reason string) chan out {
		ch := make(chan out, 1)
		go func() {
			g, err := c.Request(t.Context(), []string{perm}, 5*time.Minute, reason, nil)
			ch <- out{g, err}
		}()
		return ch
	}
	granted := func(t *testing.T, ch chan out) *sdk.Grant {
		t.Helper()
		select {
		case o := <-ch:
			require.NoError(t, o.err)
			return o.g
		case <-time.After(30 * time.Second):
			t.Fatal("the waiting Request did not return")
			return nil
		}
	}

	t.Run("requester down when asked", func(t *testing.T) {
		svc["requester"].kill()
		// See the SDK's call go out while nobody serves it.
		seen := make(chan struct{}, 16)
		// In the agent's own account, a subscriber sees its calls.
		watcher := agentConn(t, url, "market-intel")
		sub, err := watcher.Subscribe(broker.APIRequest, func(*nats.Msg) { seen <- struct{}{} })
		require.NoError(t, err)
		require.NoError(t, watcher.Flush())
		ch := ask(c, "data:write", "requester down")
		<-seen
		require.NoError(t, sub.Unsubscribe())
		svc["requester"].start()
		require.NoError(t, granted(t, ch).Done(t.Context()))
		require.Equal(t, 1, countRequests(t, url, "requester down"), "stored once")
	})

	t.Run("policy down while waiting", func(t *testing.T) {
		svc["policy"].kill()
		ch := ask(c, "data:write", "policy down")
		waitFor(t, "request stored", 10*time.Second, func() bool { return countRequests(t, url, "policy down") == 1 })
		svc["policy"].start()
		require.NoError(t, granted(t, ch).Done(t.Context()))
	})

	t.Run("approval down while waiting", func(t *testing.T) {
		svc["approval"].kill()
		ch := ask(c, "data:write", "approval down")
		waitFor(t, "request decided", 10*time.Second, func() bool { return countDecided(t, url, "approval down") == 1 })
		svc["approval"].start()
		require.NoError(t, granted(t, ch).Done(t.Context()))
	})

	t.Run("revoker down at done", func(t *testing.T) {
		g := granted(t, ask(c, "data:write", "revoker down"))
		svc["revoker"].kill()
		done := make(chan error, 1)
		go func() { done <- g.Done(t.Context()) }()
		require.False(t, closed(g.Revoked()))
		svc["revoker"].start()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Done did not return after the revoker came back")
		}
		require.Equal(t, events.RevokedCompleted, g.Reason())
		require.Len(t, revocationsOf(t, url, g.ID()), 1)
	})

	t.Run("broker restarted: the connection drops", func(t *testing.T) {
		onc := agentConn(t, url, "svc-price-optimizer")
		human, err := sdk.New(onc, "svc-price-optimizer", sdk.WithLogger(bufferedLogger(t)))
		require.NoError(t, err)
		ch := ask(human, "integrations:write", "broker restart")
		var requestID string
		waitFor(t, "pending", 10*time.Second, func() bool {
			for _, e := range audit(t, url, "jit.decided.svc-price-optimizer") {
				if d, err := events.DataAs[events.Decision](e); err == nil && d.Outcome == events.OutcomePending {
					requestID = d.RequestID
					return true
				}
			}
			return false
		})
		reconnected := make(chan struct{}, 1)
		onc.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })
		nsrv.kill()
		waitFor(t, "agent disconnected", 10*time.Second, func() bool { return !onc.IsConnected() })
		nsrv.start()
		select {
		case <-reconnected:
		case <-time.After(20 * time.Second):
			t.Fatal("the agent's connection did not come back")
		}
		approver := operatorConn(t, url)
		waitFor(t, "approve after the broker restart", 20*time.Second, func() bool {
			var res broker.ActionResult
			return broker.Call(t.Context(), approver, broker.APIApprove, "dev-alice",
				broker.ApproveInput{RequestID: requestID, Comment: "ok"}, &res) == nil
		})
		g := granted(t, ch)
		require.Equal(t, events.GrantIDFor(requestID), g.ID())
		require.False(t, closed(g.Revoked()))
	})
}
