// Command guardrail-prices is an example guardrail: the shop (the example
// resource server) tells it of every price change over HTTP (POST
// /price-changes), and when an agent sets a price below the floor it
// publishes a guardrail.fired CloudEvent (rule price-floor) with the
// guardrail source's own NATS credential (--creds, the example
// configuration's pricing-guard). The JIT revoker then revokes every grant
// of that agent and suspends it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS URL")
	floor := flag.Float64("floor", 2.00, "the lowest acceptable price")
	listen := flag.String("listen", "127.0.0.1:0", "HTTP address where the shop reports price changes")
	var client auth.ClientOptions
	client.Flags(flag.CommandLine, os.Getenv)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, client, *listen, *floor); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "guardrail-prices:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func say(format string, args ...any) { fmt.Printf("[guardrail] "+format+"\n", args...) }

type priceChange struct {
	SKU   string  `json:"sku"`
	Price float64 `json:"price"`
	Agent string  `json:"agent"`
}

func run(ctx context.Context, url string, client auth.ClientOptions, listen string, floor float64) error {
	opts, err := client.NATSOptions()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1))...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	changes := make(chan priceChange, 64)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /price-changes", func(w http.ResponseWriter, r *http.Request) {
		var c priceChange
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&c); err != nil {
			http.Error(w, "body must be {\"sku\":…,\"price\":…,\"agent\":…}", http.StatusBadRequest)
			return
		}
		select {
		case changes <- c:
			w.WriteHeader(http.StatusAccepted)
		case <-r.Context().Done():
		}
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	say("watching price changes on http://%s/price-changes (floor %.2f)", ln.Addr(), floor)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-changes:
			if c.Price >= floor || !events.ValidID(c.Agent) {
				continue
			}
			detail := fmt.Sprintf("SKU %s at %.2f, floor %.2f", c.SKU, c.Price, floor)
			if err := fire(ctx, js, c.Agent, detail); err != nil {
				say("could not report %s: %v", detail, err)
				continue
			}
			say("FIRED price-floor against %s: %s", c.Agent, detail)
		}
	}
}

// fire publishes guardrail.fired.<agent>: the JIT system's ingress checks
// that this source may fire price-floor against the agent, stores the event
// on the audit stream, and answers as the stream would.
func fire(ctx context.Context, js jetstream.JetStream, agent, detail string) error {
	g := events.GuardrailFired{Agent: agent, Rule: "price-floor", Detail: detail, FiredAt: time.Now().UTC()}
	e, err := events.New(events.NewID("grd"), events.TypeGuardrailFired, "/examples/guardrail-prices", agent, g)
	if err != nil {
		return err
	}
	m, err := broker.ToMsg(events.Subject(events.TypeGuardrailFired, agent), e)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = js.PublishMsg(pctx, m)
	return err
}
