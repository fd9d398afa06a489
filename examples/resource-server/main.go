// Command resource-server is an example resource server protected by
// pkg/checker: a tiny price service where reading prices needs data:read
// and setting one needs data:write. Agents authenticate with a bearer token
// (--token TOKEN=AGENT); every decision is local to the process, fed by the
// checker, which reads the grants and suspensions with the checker's NATS
// credential (--creds). Each price change is reported to the shop's
// guardrail over HTTP (--guardrail URL).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

type tokenFlag map[string]string

func (t tokenFlag) String() string { return "" }
func (t tokenFlag) Set(v string) error {
	tok, agent, ok := strings.Cut(v, "=")
	if !ok || tok == "" || agent == "" {
		return fmt.Errorf("want TOKEN=AGENT, got %q", v)
	}
	t[tok] = agent
	return nil
}

func main() {
	tokens := tokenFlag{}
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS URL")
	listen := flag.String("listen", "127.0.0.1:0", "HTTP address")
	flag.Var(tokens, "token", "TOKEN=AGENT: a bearer token naming an agent (repeatable)")
	guardrail := flag.String("guardrail", "", "URL to POST each price change to (the guardrail's /price-changes)")
	var client auth.ClientOptions
	client.Flags(flag.CommandLine, os.Getenv)
	flag.Parse()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).Level(zerolog.WarnLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, client, *listen, *guardrail, tokens, log); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "resource-server:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func say(format string, args ...any) { fmt.Printf("[resource]  "+format+"\n", args...) }

func run(ctx context.Context, url string, client auth.ClientOptions, listen, guardrail string, tokens map[string]string, log zerolog.Logger) error {
	opts, err := client.NATSOptions()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1))...)
	if err != nil {
		return err
	}
	defer nc.Close()
	p, withCreds, err := client.Principal()
	if err != nil {
		return err
	}
	js, err := auth.JetStream(nc, p, withCreds)
	if err != nil {
		return err
	}
	src, err := config.Follow(ctx, js, log)
	if err != nil {
		return err
	}
	chk := checker.New(js, src, checker.WithLogger(log), checker.WithStaleAfter(2*time.Second))
	if err := chk.Start(ctx); err != nil {
		return err
	}
	defer chk.Stop()

	var mu sync.Mutex
	prices := map[string]float64{"1180": 4.10, "1181": 3.75, "1182": 2.95}
	id := checker.BearerTokens(tokens)
	mux := http.NewServeMux()
	mux.Handle("GET /prices", chk.Require("data:read", id)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(prices)
	})))
	mux.Handle("PUT /prices/{sku}", chk.Require("data:write", id)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Price float64 `json:"price"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&in); err != nil {
			http.Error(w, "body must be {\"price\": N}", http.StatusBadRequest)
			return
		}
		agent, _ := checker.AgentFrom(r.Context())
		sku := r.PathValue("sku")
		mu.Lock()
		prices[sku] = in.Price
		mu.Unlock()
		say("%s set SKU %s to %.2f (data:write allowed)", agent, sku, in.Price)
		body, _ := json.Marshal(map[string]any{"sku": sku, "price": in.Price, "agent": agent})
		if guardrail != "" {
			report(r.Context(), guardrail, body)
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	// Log refusals as they happen.
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		mux.ServeHTTP(rec, r)
		if rec.status >= 400 {
			say("REFUSED %s %s: %d %s", r.Method, r.URL.Path, rec.status, strings.TrimSpace(rec.body))
		}
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: logged, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	say("listening on http://%s (GET /prices needs data:read, PUT /prices/{sku} needs data:write)", ln.Addr())
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ctx.Err()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	body   string
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = 200
	}
	if s.status >= 400 && len(s.body) < 300 {
		s.body += string(b)
	}
	return s.ResponseWriter.Write(b)
}

// report tells the guardrail of a price change, best effort.
func report(ctx context.Context, url string, body []byte) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}
