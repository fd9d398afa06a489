package checker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultStaleAfter is the bound on the age of the checker's view used when
// WithStaleAfter is not given.
const DefaultStaleAfter = 5 * time.Second

// WithStaleAfter bounds how old the checker's view of the buckets may get
// before it fails closed: once the checker has not confirmed a live
// connection to the broker for longer than d (the connection is lost, the
// server is unreachable, or a watch ended), Allowed refuses every permission
// that comes from a grant, while base permissions of known, non-suspended
// agents still answer (from the suspensions last seen). d <= 0 disables the
// bound: the checker then answers from its last view forever.
func WithStaleAfter(d time.Duration) Option { return func(c *Checker) { c.staleAfter = d } }

// probeInterval is how often the checker confirms its connection: a quarter
// of the bound, within [10ms, 1s]. A stale view is therefore noticed at most
// about staleAfter + 2 probe intervals after the last confirmation.
func probeInterval(staleAfter time.Duration) time.Duration {
	if staleAfter <= 0 {
		return time.Second
	}
	return min(max(staleAfter/4, 10*time.Millisecond), time.Second)
}

// Stale reports whether the checker currently fails closed on grants
// because its view is older than the WithStaleAfter bound (or it was
// stopped). It is always false when the bound is disabled.
func (c *Checker) Stale() bool { return c.stale.Load() }

// monitor confirms the connection every probe interval with a round trip
// to the server (a PING that the server answers in order with the watches'
// messages) and raises or clears the stale flag. It runs until ctx ends.
func (c *Checker) monitor(ctx context.Context, nc *nats.Conn) {
	defer c.wg.Done()
	every := probeInterval(c.staleAfter)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := nc.FlushWithContext(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// The round trip proves the connection; the view is fresh only if
		// the followers have nothing to catch up on (a reconnect or a
		// dropped live change makes them read their buckets again).
		if err == nil && c.resync(ctx) && !c.broken.Load() {
			c.lastOK.Store(int64(time.Since(c.epoch)))
		}
		c.forgetExpired()
		if c.staleAfter <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			continue
		}
		age := time.Since(c.epoch) - time.Duration(c.lastOK.Load())
		stale := age > c.staleAfter
		if was := c.stale.Swap(stale); was != stale {
			if stale {
				c.log.Warn().Err(err).Dur("age", age).Dur("bound", c.staleAfter).
					Msg("checker view is stale: refusing grants until the broker answers again")
			} else {
				c.log.Info().Msg("checker view is fresh again")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// forgetAfter is how long after its expiry a grant stays in the view: the
// view drops a grant when the bucket reports its key gone, but a checker
// that follows no consumer may not hear of a TTL expiry, so the clock
// clears it too. Expired grants never count either way.
const forgetAfter = time.Minute

// forgetExpired drops from the view the grants that expired more than
// forgetAfter ago.
func (c *Checker) forgetExpired() {
	cut := c.now().Add(-forgetAfter)
	c.mu.Lock()
	defer c.mu.Unlock()
	for agent, m := range c.grants {
		for id, g := range m {
			if g.ExpiresAt.Before(cut) {
				delete(m, id)
				c.unindex(agent, g)
			}
		}
		if len(m) == 0 {
			delete(c.grants, agent)
		}
	}
}
