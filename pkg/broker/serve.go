package broker

import "github.com/nats-io/nats.go/micro"

// Concurrent runs h for up to n requests at once. A micro endpoint calls its
// handler for one request at a time (one subscription, one goroutine), so a
// handler that waits on the broker (a KV read, a publish acknowledgement)
// caps the endpoint at one round trip per request; Concurrent overlaps them.
// Requests beyond n wait in the endpoint's subscription, in order.
//
// h may run after the micro service was stopped (for requests that arrived
// before): a handler must check its own service's shutdown state, as every
// JIT endpoint does, and answer 503 when it is stopping.
func Concurrent(n int, h micro.Handler) micro.Handler {
	if n <= 1 {
		return h
	}
	sem := make(chan struct{}, n)
	return micro.HandlerFunc(func(req micro.Request) {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			h.Handle(req)
		}()
	})
}
