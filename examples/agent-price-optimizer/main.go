// Command agent-price-optimizer is an example agent using pkg/sdk. It asks
// for data:write, reprices a few SKUs through the resource server, and
// signals done. Then it asks again and, through a bug, sets a price below
// the floor: the guardrail fires, the grant's Revoked channel closes and
// the agent stops work; the resource server refuses it from then on.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/nats-io/nats.go"
)

func main() {
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS URL")
	agent := flag.String("agent", "svc-price-optimizer", "the agent id")
	resource := flag.String("resource", "http://127.0.0.1:8081", "the resource server's base URL")
	token := flag.String("token", "", "the agent's bearer token at the resource server")
	var client auth.ClientOptions
	client.Flags(flag.CommandLine, os.Getenv)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, client, *agent, *resource, *token); err != nil {
		fmt.Fprintln(os.Stderr, "agent-price-optimizer:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func say(format string, args ...any) { fmt.Printf("[agent]     "+format+"\n", args...) }

type shop struct {
	base, token string
	// grant is the id of the grant the agent works under, presented in
	// checker.GrantHeader so that the resource server waits for its view
	// to hold a grant the agent has just been given, instead of refusing.
	grant string
}

// setPrice returns the HTTP status and, for a refusal, the body.
func (s shop) do(ctx context.Context, method, path string, body string) (int, string) {
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	if s.grant != "" {
		req.Header.Set(checker.GrantHeader, s.grant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

func (s shop) setPrice(ctx context.Context, sku string, price float64) (int, string) {
	return s.do(ctx, http.MethodPut, "/prices/"+sku, fmt.Sprintf(`{"price":%.2f}`, price))
}

func run(ctx context.Context, url string, client auth.ClientOptions, agent, resource, token string) error {
	opts, err := client.NATSOptions()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1))...)
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := sdk.New(nc, agent)
	if err != nil {
		return err
	}
	s := shop{base: resource, token: token}

	// 1. A normal task: ask, work, signal done.
	say("requesting data:write for 10m: \"reprice winter catalogue\"")
	g, err := c.Request(ctx, []string{"data:write"}, 10*time.Minute, "reprice winter catalogue", map[string]string{"ticket": "PRC-7"})
	if err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	say("GRANTED %s (%s) until %s", g.ID(), g.Info().Mode, g.ExpiresAt().Format(time.TimeOnly))
	s.grant = g.ID()
	for _, p := range []struct {
		sku   string
		price float64
	}{{"1180", 3.99}, {"1181", 3.49}} {
		if st, body := s.setPrice(ctx, p.sku, p.price); st != http.StatusNoContent {
			return fmt.Errorf("set %s: %d %s", p.sku, st, body)
		}
		say("repriced SKU %s to %.2f", p.sku, p.price)
	}
	if err := g.Done(ctx); err != nil {
		return err
	}
	<-g.Revoked()
	say("task done: signalled done, grant ended (%s)", g.Reason())
	if st, _ := s.setPrice(ctx, "1180", 3.89); st == http.StatusForbidden {
		say("as expected, data:write is gone after done (403)")
	}

	// 2. A second task with a bug: a price below the floor.
	say("requesting data:write for 5m: \"flash sale\"")
	g, err = c.Request(ctx, []string{"data:write"}, 5*time.Minute, "flash sale", nil)
	if err != nil {
		return fmt.Errorf("second request: %w", err)
	}
	say("GRANTED %s (%s) until %s", g.ID(), g.Info().Mode, g.ExpiresAt().Format(time.TimeOnly))
	s.grant = g.ID()
	prices := []float64{2.49, 0.40, 2.25, 2.10, 1.99, 1.95}
	tick := time.NewTicker(150 * time.Millisecond) // also paces step 3
	defer tick.Stop()
work:
	for i := 0; ; i++ {
		select {
		case <-g.Revoked():
			say("grant REVOKED (%s): stopping work at once", g.Reason())
			break work
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if i >= len(prices) {
				if i > 100 {
					return errors.New("the grant was never revoked")
				}
				continue
			}
			st, body := s.setPrice(ctx, "1182", prices[i])
			if st != http.StatusNoContent {
				say("write refused (%d): %s", st, body)
				continue
			}
			say("set SKU 1182 to %.2f", prices[i])
		}
	}

	// 3. The resource server refuses the suspended agent everything. Its
	// checker learns of the suspension through its own watch, within
	// milliseconds of the agent learning of the revocation: read (harmless)
	// until it refuses, then try to write.
	s.grant = ""
	st, body := s.do(ctx, http.MethodGet, "/prices", "")
	for i := 0; st == http.StatusOK && i < 100; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		st, body = s.do(ctx, http.MethodGet, "/prices", "")
	}
	if st == http.StatusOK {
		return errors.New("the resource server never saw the suspension")
	}
	say("resource server refuses even data:read (%d): %s", st, body)
	if st, body := s.setPrice(ctx, "1182", 2.50); st != http.StatusNoContent {
		say("resource server refuses data:write (%d): %s", st, body)
	} else {
		return errors.New("a suspended agent could write")
	}
	_, err = c.Request(ctx, []string{"data:write"}, time.Minute, "retry", nil)
	switch {
	case errors.Is(err, sdk.ErrSuspended):
		say("new requests are refused: %v", err)
	case err != nil:
		return err
	default:
		return errors.New("a suspended agent was granted")
	}
	return nil
}
