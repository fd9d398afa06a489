// Command jit-mcp is an MCP server that gives one agent just-in-time access
// natively: tools request_elevation, release_elevation, check_permission and
// list_my_grants, over stdio (default) or streamable HTTP.
//
//	jit-mcp --agent market-intel                       # stdio, for an MCP client that spawns it
//	jit-mcp --agent market-intel --http 127.0.0.1:8090 # streamable HTTP at /mcp
//
// It acts with the agent's own NATS credential (--creds / NATS_CREDS): the
// agent comes from the credential (or --agent / JIT_AGENT), never from tool
// arguments, and everything it reads is the agent's own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

type options struct {
	agent   string
	natsURL string
	http    string // empty: stdio
	client  auth.ClientOptions
}

func main() {
	fs := flag.NewFlagSet("jit-mcp", flag.ExitOnError)
	o := options{}
	fs.StringVar(&o.agent, "agent", os.Getenv("JIT_AGENT"), "the agent this server acts as (env JIT_AGENT)")
	fs.StringVar(&o.natsURL, "nats", envOr("NATS_URL", nats.DefaultURL), "NATS URL (env NATS_URL)")
	fs.StringVar(&o.http, "http", "", "serve streamable HTTP at http://ADDR/mcp instead of stdio")
	o.client.Flags(fs, os.Getenv)
	_ = fs.Parse(os.Args[1:])
	// Logs go to stderr: stdout is the stdio transport.
	log := zerolog.New(os.Stderr).With().Timestamp().Str("component", "jit-mcp").Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdin, os.Stdout, nil, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("jit-mcp")
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// run serves MCP until ctx ends: over in/out (stdio) or, with o.http, over
// streamable HTTP; ready, if not nil, receives the HTTP address once
// listening.
func run(ctx context.Context, o options, in io.ReadCloser, out io.WriteCloser, ready chan<- string, log zerolog.Logger) error {
	if o.agent == "" {
		// The agent's credential names it.
		if p, ok, err := o.client.Principal(); err != nil {
			return err
		} else if ok && p.Kind == auth.KindAgent {
			o.agent = p.ID
		}
	}
	if o.agent == "" {
		return errors.New("--agent (or JIT_AGENT, or an agent's --creds) is required")
	}
	if p, ok, _ := o.client.Principal(); ok && (p.Kind != auth.KindAgent || p.ID != o.agent) {
		return fmt.Errorf("the credential is %s's, not agent %s's", p, o.agent)
	}
	nopts, err := o.client.NATSOptions()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(o.natsURL, append([]nats.Option{nats.Name("jit-mcp " + o.agent), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true)}, nopts...)...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", o.natsURL, err)
	}
	defer nc.Close()
	client, err := sdk.New(nc, o.agent, sdk.WithLogger(log))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := newServer(&tools{agent: o.agent, client: client})

	if o.http == "" {
		log.Info().Str("agent", o.agent).Msg("serving MCP on stdio")
		return srv.Run(ctx, &mcp.IOTransport{Reader: in, Writer: out})
	}
	ln, err := net.Listen("tcp", o.http)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info().Str("agent", o.agent).Str("url", "http://"+ln.Addr().String()+"/mcp").Msg("serving MCP over streamable HTTP")
	if ready != nil {
		ready <- ln.Addr().String()
	}
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}
