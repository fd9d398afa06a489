package main

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"
)

func startJitd(t *testing.T) string {
	t.Helper()
	cfg, err := filepath.Abs("../../examples/jit.yaml")
	require.NoError(t, err)
	app := allinone.New(allinone.Options{ConfigFile: cfg, DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1"}, natstest.Logger(t))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	credsDir = app.CredsDir()
	return app.NATSURL()
}

// credsDir is the running jitd's credentials directory.
var credsDir string

// agentOptions are the options of a jit-mcp for agent, with its credential.
func agentOptions(url, agent string) options {
	return options{natsURL: url, client: auth.ClientOptions{Creds: filepath.Join(credsDir, "agent-"+agent+".creds")}}
}

// serve starts run() with the given transport and returns a connected
// client session.
func serve(t *testing.T, url, agent, transport string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	client := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "0"}, nil)
	var ct mcp.Transport
	switch transport {
	case "stdio":
		cr, sw := io.Pipe() // server → client
		sr, cw := io.Pipe() // client → server
		go func() { done <- run(ctx, agentOptions(url, agent), sr, sw, nil, natstest.Logger(t)) }()
		ct = &mcp.IOTransport{Reader: cr, Writer: cw}
	case "http":
		ready := make(chan string, 1)
		go func() {
			o := agentOptions(url, agent)
			o.http = "127.0.0.1:0"
			done <- run(ctx, o, nil, nil, ready, natstest.Logger(t))
		}()
		select {
		case addr := <-ready:
			ct = &mcp.StreamableClientTransport{Endpoint: "http://" + addr + "/mcp"}
		case err := <-done:
			t.Fatalf("run: %v", err)
		}
	}
	cs, err := client.Connect(ctx, ct, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cs.Close()
		cancel()
		<-done
	})
	return cs
}

func callTool[T any](t *testing.T, cs *mcp.ClientSession, name string, args any) (T, *mcp.CallToolResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	require.NoError(t, err)
	var out T
	if res.StructuredContent != nil {
		b, err := json.Marshal(res.StructuredContent)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &out))
	}
	return out, res
}

func TestMCPTools(t *testing.T) {
	url := startJitd(t)
	for _, transport := range []string{"stdio", "http"} {
		t.Run(transport, func(t *testing.T) {
			cs := serve(t, url, "market-intel", transport)
			ctx := t.Context()
			lt, err := cs.ListTools(ctx, nil)
			require.NoError(t, err)
			names := map[string]*mcp.Tool{}
			for _, tool := range lt.Tools {
				names[tool.Name] = tool
			}
			for _, n := range []string{"request_elevation", "release_elevation", "check_permission", "list_my_grants"} {
				require.Contains(t, names, n)
				require.NotEmpty(t, names[n].Description)
				require.NotNil(t, names[n].InputSchema)
			}
			schema, err := json.Marshal(names["request_elevation"].InputSchema)
			require.NoError(t, err)
			require.Contains(t, string(schema), `"permissions"`)
			require.NotContains(t, string(schema), `"agent"`, "the agent is never a tool argument")

			chk, _ := callTool[CheckOutput](t, cs, "check_permission", CheckInput{Permission: "data:write"})
			require.False(t, chk.Allowed)
			chk, _ = callTool[CheckOutput](t, cs, "check_permission", CheckInput{Permission: "data:read"})
			require.True(t, chk.Allowed)
			require.True(t, chk.Base)

			req, res := callTool[RequestOutput](t, cs, "request_elevation",
				map[string]any{"permissions": []string{"data:write"}, "duration": "5m", "reason": "clean up orphaned SKUs",
					"context": map[string]string{"ticket": "OPS-42"}})
			require.False(t, res.IsError)
			require.Equal(t, "granted", req.Outcome)
			require.NotEmpty(t, req.GrantID)
			// Right after the grant, with no waiting: the server answered
			// once its own view held it.
			chk, _ = callTool[CheckOutput](t, cs, "check_permission", CheckInput{Permission: "data:write"})
			require.True(t, chk.Allowed, chk.Reason)
			require.Equal(t, req.GrantID, chk.GrantID)
			list, _ := callTool[ListOutput](t, cs, "list_my_grants", map[string]any{})
			require.Equal(t, "market-intel", list.Agent)
			require.Len(t, list.Grants, 1)

			rel, res := callTool[ReleaseOutput](t, cs, "release_elevation", ReleaseInput{GrantID: req.GrantID})
			require.False(t, res.IsError)
			require.Equal(t, "released", rel.Outcome)
			require.Eventually(t, func() bool {
				c, _ := callTool[CheckOutput](t, cs, "check_permission", CheckInput{Permission: "data:write"})
				return !c.Allowed
			}, 10*time.Second, 20*time.Millisecond)
			_, res = callTool[ReleaseOutput](t, cs, "release_elevation", ReleaseInput{GrantID: req.GrantID})
			require.True(t, res.IsError, "a grant that is not live (or not mine) cannot be released")

			bad, res := callTool[RequestOutput](t, cs, "request_elevation",
				map[string]any{"permissions": []string{"data:delete"}, "duration": "5m", "reason": "x"})
			require.True(t, res.IsError)
			require.Equal(t, "refused", bad.Outcome)
			require.Contains(t, bad.Reason, "not eligible")
		})
	}
}

func TestMCPDenied(t *testing.T) {
	url := startJitd(t)
	cs := serve(t, url, "svc-price-optimizer", "stdio")
	out, res := callTool[RequestOutput](t, cs, "request_elevation",
		map[string]any{"permissions": []string{"data:write"}, "duration": "25m", "reason": "reprice everything"})
	require.False(t, res.IsError, "a denial is an answer, not a tool failure")
	require.Equal(t, "denied", out.Outcome)
	require.Equal(t, "policy", out.Mode)
	require.Contains(t, out.Reason, "20m")
}
