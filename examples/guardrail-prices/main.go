// Command guardrail-prices is an example guardrail: it watches price
// changes (NATS subject shop.prices.<sku>) and, when an agent sets a price
// below the floor, publishes a guardrail.fired CloudEvent (rule
// price-floor). The JIT revoker then revokes every grant of that agent and
// suspends it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS URL")
	floor := flag.Float64("floor", 2.00, "the lowest acceptable price")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *floor); err != nil && !errors.Is(err, context.Canceled) {
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

func run(ctx context.Context, url string, floor float64) error {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pub := broker.NewPublisher(js, "guardrail-prices")
	changes := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("shop.prices.>", changes)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return err
	}
	say("watching shop.prices.> (floor %.2f)", floor)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-changes:
			var c priceChange
			if json.Unmarshal(m.Data, &c) != nil || c.Price >= floor || !events.ValidID(c.Agent) {
				continue
			}
			detail := fmt.Sprintf("SKU %s at %.2f, floor %.2f", c.SKU, c.Price, floor)
			g := events.GuardrailFired{Agent: c.Agent, Rule: "price-floor", Detail: detail, FiredAt: time.Now().UTC()}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _, err := pub.Emit(pctx, events.NewID("grd"), events.TypeGuardrailFired, c.Agent, g)
			cancel()
			if err != nil {
				say("could not report %s: %v", detail, err)
				continue
			}
			say("FIRED price-floor against %s: %s", c.Agent, detail)
		}
	}
}
