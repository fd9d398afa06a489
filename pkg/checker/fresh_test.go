package checker_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestStaleViewFailsClosed cuts the checker off the broker: after the bound,
// grants are refused while base permissions still answer; once the broker is
// back, grants count again.
func TestStaleViewFailsClosed(t *testing.T) {
	dir := t.TempDir()
	addr := "127.0.0.1:" + freePort(t)
	srv, err := embedded.Start(embedded.Options{Listen: addr, StoreDir: dir, ServerName: "stale"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Shutdown() })
	nc, err := nats.Connect("nats://"+addr, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, broker.Ensure(ctx, js, broker.DefaultOptions()))
	b, err := broker.OpenBuckets(ctx, js)
	require.NoError(t, err)
	env := &natstest.Env{Server: srv, StoreDir: dir, NC: nc, JS: js, Buckets: b, Log: natstest.Logger(t)}
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	src := env.ApplyConfig(t, string(yml))

	g := grant("grt_stale", agent, time.Now().Add(time.Hour), "data:write")
	gb, err := json.Marshal(g)
	require.NoError(t, err)
	_, err = b.Grants.Put(ctx, broker.GrantKey(agent, g.GrantID), gb)
	require.NoError(t, err)

	chk := checker.New(js, src, checker.WithStaleAfter(200*time.Millisecond), checker.WithLogger(env.Log))
	require.NoError(t, chk.Start(ctx))
	t.Cleanup(chk.Stop)
	require.True(t, chk.Allowed(agent, "data:write"))
	require.False(t, chk.Stale())

	srv.Shutdown()
	srv.WaitForShutdown()
	eventually(t, chk.Stale, "connection lost → stale")
	require.False(t, chk.Allowed(agent, "data:write"), "a stale view refuses grants")
	r := chk.Check(agent, "data:write")
	require.True(t, r.Stale)
	require.Contains(t, r.Reason, "stale")
	require.True(t, chk.Allowed(agent, "data:read"), "base permissions still answer")

	srv2, err := embedded.Start(embedded.Options{Listen: addr, StoreDir: dir, ServerName: "stale"})
	require.NoError(t, err)
	t.Cleanup(func() { srv2.Shutdown() })
	eventually(t, func() bool { return !chk.Stale() && chk.Allowed(agent, "data:write") }, "broker back → fresh")

	chk.Stop()
	require.False(t, chk.Allowed(agent, "data:write"), "a stopped checker refuses grants")
	require.True(t, chk.Allowed(agent, "data:read"))
}

func TestStaleBoundDisabled(t *testing.T) {
	env := natstest.Setup(t)
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	src := env.ApplyConfig(t, string(yml))
	chk := checker.New(env.JS, src, checker.WithStaleAfter(0))
	require.NoError(t, chk.Start(t.Context()))
	f := &fixture{env: env, chk: chk, ctx: t.Context()}
	f.putGrant(t, grant("grt_x", agent, time.Now().Add(time.Hour), "data:write"))
	eventually(t, func() bool { return chk.Allowed(agent, "data:write") }, "grant seen")
	chk.Stop()
	require.False(t, chk.Stale())
	require.True(t, chk.Allowed(agent, "data:write"), "without a bound the last view keeps answering")
}

func TestRequireMiddleware(t *testing.T) {
	f := setup(t)
	id := checker.BearerTokens(map[string]string{"tok-intel": agent, "tok-ghost": "nobody"})
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, _ := checker.AgentFrom(r.Context())
		_, _ = w.Write([]byte("hello " + a))
	})
	mux.Handle("GET /prices", f.chk.Require("data:read", id)(ok))
	mux.Handle("POST /prices", f.chk.Require("data:write", id)(ok))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	call := func(method, token string) (int, checker.Denial, string) {
		req, err := http.NewRequestWithContext(context.Background(), method, srv.URL+"/prices", nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var d checker.Denial
		var body []byte
		if resp.StatusCode == http.StatusOK {
			body = make([]byte, 64)
			n, _ := resp.Body.Read(body)
			body = body[:n]
		} else {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&d))
		}
		return resp.StatusCode, d, string(body)
	}

	for _, tc := range []struct {
		name, method, token string
		status              int
		errCode             string
	}{
		{"no token", "GET", "", 401, "unauthenticated"},
		{"unknown token", "GET", "tok-nope", 401, "unauthenticated"},
		{"base permission", "GET", "tok-intel", 200, ""},
		{"no grant", "POST", "tok-intel", 403, "forbidden"},
		{"unknown agent", "GET", "tok-ghost", 403, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, d, body := call(tc.method, tc.token)
			require.Equal(t, tc.status, st)
			require.Equal(t, tc.errCode, d.Error)
			if st == 200 {
				require.Equal(t, "hello "+agent, body)
			} else {
				require.NotEmpty(t, d.Reason)
			}
		})
	}

	f.putGrant(t, grant("grt_mw", agent, time.Now().Add(time.Hour), "data:write"))
	eventually(t, func() bool { st, _, _ := call("POST", "tok-intel"); return st == 200 }, "grant → 200")
	f.suspend(t, agent)
	eventually(t, func() bool { st, _, _ := call("GET", "tok-intel"); return st == 403 }, "suspended → base refused")
	_, d, _ := call("POST", "tok-intel")
	require.Contains(t, d.Reason, "suspended")
}

// TestRequireAwaitsPresentedGrant: an agent uses its grant the moment it
// learns of it, before the checker's watch delivered it. A request that
// presents the grant id (GrantHeader) waits for the view instead of being
// refused; a presented id decides nothing by itself.
func TestRequireAwaitsPresentedGrant(t *testing.T) {
	f := setup(t)
	arrived := make(chan struct{}, 4)
	id := func(r *http.Request) (string, error) {
		arrived <- struct{}{} // the request is at the middleware
		return agent, nil
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	srv := httptest.NewServer(f.chk.Require("data:write", id)(ok))
	t.Cleanup(srv.Close)
	put := func(grantID string) (int, error) {
		req, err := http.NewRequestWithContext(t.Context(), "PUT", srv.URL, nil)
		require.NoError(t, err)
		req.Header.Set(checker.GrantHeader, grantID)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// Held by the view but without the permission: refused at once.
	f.putGrant(t, grant("grt_other", agent, time.Now().Add(time.Hour), "other:perm"))
	require.True(t, f.chk.AwaitGrant(t.Context(), agent, "grt_other"))
	st, err := put("grt_other")
	<-arrived
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, st)

	// Not in the view yet: the request waits for it.
	status := make(chan int, 1)
	go func() { st, _ := put("grt_late"); status <- st }()
	<-arrived
	require.False(t, f.chk.Allowed(agent, "data:write"))
	f.putGrant(t, grant("grt_late", agent, time.Now().Add(time.Hour), "data:write"))
	require.Equal(t, http.StatusNoContent, <-status, "the presented grant was awaited")

	// A grant that came and went is not awaited: refused at once.
	require.NoError(t, f.env.Buckets.Grants.Delete(t.Context(), broker.GrantKey(agent, "grt_late")))
	eventually(t, func() bool { return !f.chk.Allowed(agent, "data:write") }, "revocation seen")
	start := time.Now()
	st, err = put("grt_late")
	<-arrived
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, st)
	require.Less(t, time.Since(start), checker.DefaultGrantWait/2, "an ended grant is not awaited")

	// A grant that never comes: AwaitGrant ends with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	require.False(t, f.chk.AwaitGrant(ctx, agent, "grt_never"))
}
