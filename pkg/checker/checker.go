// Package checker is the JIT system's enforcement point: it keeps the grants
// and suspensions buckets in memory through KV watches and answers "may
// agent A use permission P now?" without a round trip to the broker.
//
// A permission is allowed when the agent is known to the configuration, is
// not suspended, and either holds it as a base permission or has a grant
// whose status is active and whose expires_at is after the checker's clock.
// The mere presence of a grant key never counts: the server's TTL runs in
// whole seconds, and after a restart expired keys stay readable briefly.
package checker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Result explains one decision of Check.
type Result struct {
	Allowed bool `json:"allowed"`
	// Reason says why, in words fit for a log line or an operator.
	Reason string `json:"reason"`
	// GrantID and ExpiresAt name the grant that allowed the permission (the
	// one that lasts longest, if several do).
	GrantID   string    `json:"grant_id,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Base is true when the permission is one of the agent's standing ones.
	Base bool `json:"base,omitempty"`
	// Stale is true when the refusal is only because the checker's view is
	// older than its bound (see WithStaleAfter): asking again later may
	// succeed.
	Stale bool `json:"stale,omitempty"`
}

// Option configures a Checker.
type Option func(*Checker)

// WithClock sets the clock grants are compared with (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *Checker) { c.now = now } }

// WithLogger sets the logger (default: discard).
func WithLogger(log zerolog.Logger) Option { return func(c *Checker) { c.log = log } }

// Checker answers permission checks from an in-memory copy of the grants and
// suspensions buckets. It is safe for concurrent use.
type Checker struct {
	js  jetstream.JetStream
	cfg *config.Source
	now func() time.Time
	log zerolog.Logger

	mu sync.RWMutex
	// grants maps agent → grant id → grant, as read from the bucket. Entries
	// may be expired: every read compares expires_at with the clock.
	grants map[string]map[string]*events.Grant
	// longest maps (agent, permission) to the grant in grants that includes
	// the permission and has the latest expires_at. If that one no longer
	// counts at some instant, none does: Allowed is one lookup and one clock
	// comparison however many grants an agent holds.
	longest map[permKey]*events.Grant
	// suspended maps agent → its suspension record.
	suspended map[string]*events.Suspension
	// changed, when not nil, is closed (and cleared) at the next change of
	// the grants view: AwaitGrant waits on it. It exists only while someone
	// waits, so that applying a grant allocates nothing otherwise.
	changed chan struct{}
	// ended remembers the keys (agent.grant) of the last endedCap grants
	// removed from the view, in a ring, so that AwaitGrant gives up at once
	// on a grant that has come and gone.
	ended     map[string]struct{}
	endedRing []string
	endedNext int
	// grantWait bounds how long Require waits for a grant that a request
	// presents (GrantHeader) to reach the view (WithGrantWait).
	grantWait time.Duration

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	followers []*broker.BucketFollower

	// Freshness (fresh.go): staleAfter bounds the view's age; lastOK is
	// the monotonic time since epoch of the last confirmed round trip;
	// broken is set when a watch ended for good.
	staleAfter time.Duration
	epoch      time.Time
	lastOK     atomic.Int64
	stale      atomic.Bool
	broken     atomic.Bool
}

// New returns a Checker reading the buckets through js and base permissions
// and known agents from cfg. A nil cfg knows no agent: Allowed refuses
// everything, while Grants still lists the bucket's grants.
func New(js jetstream.JetStream, cfg *config.Source, opts ...Option) *Checker {
	c := &Checker{
		js:         js,
		cfg:        cfg,
		now:        time.Now,
		log:        zerolog.Nop(),
		staleAfter: DefaultStaleAfter,
		grantWait:  DefaultGrantWait,
		grants:     map[string]map[string]*events.Grant{},
		longest:    map[permKey]*events.Grant{},
		suspended:  map[string]*events.Suspension{},
		ended:      map[string]struct{}{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Start watches the grants and suspensions buckets and returns once both
// watches delivered the buckets' current contents, so that a check right
// after Start sees every grant and suspension stored before it. The watches
// run until Stop is called or ctx ends; the watchers recreate their
// consumers after a reconnect. Unless WithStaleAfter disabled it, Start also
// begins confirming the connection: see WithStaleAfter.
func (c *Checker) Start(ctx context.Context) error {
	nc, prefix := c.js.Conn(), broker.APIPrefixOf(c.js)
	wctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	gf, err := broker.FollowBucket(ctx, nc, prefix, broker.BucketGrants, c.applyGrant)
	if err != nil {
		cancel()
		return fmt.Errorf("follow %s: %w", broker.BucketGrants, err)
	}
	sf, err := broker.FollowBucket(ctx, nc, prefix, broker.BucketSuspensions, c.applySuspension)
	if err != nil {
		gf.Stop()
		cancel()
		return fmt.Errorf("follow %s: %w", broker.BucketSuspensions, err)
	}
	c.followers = []*broker.BucketFollower{gf, sf}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		<-wctx.Done()
		gf.Stop()
		sf.Stop()
	}()
	if c.staleAfter > 0 {
		c.epoch = time.Now()
		c.lastOK.Store(0)
		c.stale.Store(false)
	}
	c.wg.Add(1)
	go c.monitor(wctx, nc)
	return nil
}

// Stop ends the watches and waits for them. The checker keeps answering
// from what it last saw, except that with a staleness bound (the default)
// it refuses grants from then on: its view no longer follows the buckets.
func (c *Checker) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	if c.staleAfter > 0 {
		c.stale.Store(true)
	}
}

// resync makes every follower read its bucket again if live changes may have
// been lost; it is false if one could not.
func (c *Checker) resync(ctx context.Context) bool {
	ok := true
	for _, f := range c.followers {
		if err := f.Check(ctx); err != nil {
			if ctx.Err() != nil {
				// Stopping: not a failure to report.
				return false
			}
			c.log.Warn().Err(err).Msg("checker could not catch up with a bucket")
			ok = false
		}
	}
	return ok
}

func (c *Checker) applyGrant(e broker.KVChange) {
	agent, id, ok := broker.SplitKey(e.Key)
	if !ok {
		c.log.Warn().Str("key", e.Key).Msg("ignoring grant key of unexpected shape")
		return
	}
	var g *events.Grant
	if e.Op == jetstream.KeyValuePut {
		var v events.Grant
		switch err := json.Unmarshal(e.Value, &v); {
		case err != nil:
			// Failing closed: an unreadable grant grants nothing.
			c.log.Error().Err(err).Str("key", e.Key).Msg("ignoring undecodable grant")
		case v.Agent != agent || v.GrantID != id:
			c.log.Error().Str("key", e.Key).Str("grant_agent", v.Agent).Str("grant_id", v.GrantID).Msg("ignoring grant stored under another key")
		case v.Status != "" && v.Status != events.GrantActive:
			// A tombstone (revoked): the grant is gone.
		default:
			g = &v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
	if g == nil {
		c.remember(e.Key)
		if m := c.grants[agent]; m != nil {
			old := m[id]
			delete(m, id)
			if len(m) == 0 {
				delete(c.grants, agent)
			}
			if old != nil {
				c.unindex(agent, old)
			}
		}
		return
	}
	m := c.grants[agent]
	if m == nil {
		m = map[string]*events.Grant{}
		c.grants[agent] = m
	}
	old := m[id]
	m[id] = g
	if old != nil {
		c.unindex(agent, old)
	}
	c.index(agent, g)
}

// permKey names one permission of one agent.
type permKey struct{ agent, perm string }

// index makes g the longest-lasting grant of each of its permissions where
// it lasts longer than the current one; c.mu is held.
func (c *Checker) index(agent string, g *events.Grant) {
	for _, p := range g.Permissions {
		k := permKey{agent, p}
		if cur := c.longest[k]; cur == nil || g.ExpiresAt.After(cur.ExpiresAt) {
			c.longest[k] = g
		}
	}
}

// unindex drops g, which has left c.grants, from the index: where it was the
// longest-lasting grant of a permission, the next one among the agent's
// remaining grants takes its place. c.mu is held.
func (c *Checker) unindex(agent string, g *events.Grant) {
	for _, p := range g.Permissions {
		k := permKey{agent, p}
		if c.longest[k] != g {
			continue
		}
		delete(c.longest, k)
		for _, o := range c.grants[agent] {
			if o.Has(p) {
				if cur := c.longest[k]; cur == nil || o.ExpiresAt.After(cur.ExpiresAt) {
					c.longest[k] = o
				}
			}
		}
	}
}

// endedCap bounds how many ended grants the checker remembers for
// AwaitGrant.
const endedCap = 4096

// remember records that the grant under key ended; c.mu is held.
func (c *Checker) remember(key string) {
	if _, ok := c.ended[key]; ok {
		return
	}
	if len(c.endedRing) < endedCap {
		c.endedRing = append(c.endedRing, key)
	} else {
		delete(c.ended, c.endedRing[c.endedNext])
		c.endedRing[c.endedNext] = key
		c.endedNext = (c.endedNext + 1) % endedCap
	}
	c.ended[key] = struct{}{}
}

func (c *Checker) applySuspension(e broker.KVChange) {
	agent := e.Key
	if e.Op != jetstream.KeyValuePut {
		c.mu.Lock()
		delete(c.suspended, agent)
		c.mu.Unlock()
		return
	}
	var s events.Suspension
	if err := json.Unmarshal(e.Value, &s); err != nil {
		// Failing closed: a suspension we cannot read still suspends.
		c.log.Error().Err(err).Str("agent", agent).Msg("undecodable suspension record; treating the agent as suspended")
		s = events.Suspension{Agent: agent, Rule: "unknown (unreadable record)"}
	}
	c.mu.Lock()
	c.suspended[agent] = &s
	c.mu.Unlock()
}

// Allowed reports whether agent may use perm now: the agent is known and not
// suspended, and perm is a base permission or in one of its active,
// unexpired grants, and the view is not stale (see WithStaleAfter). It does
// not allocate and makes no network call.
func (c *Checker) Allowed(agent, perm string) bool {
	return c.decide(agent, perm, c.now()).allowed()
}

// Check is Allowed with the reason, and the grant that allowed it.
func (c *Checker) Check(agent, perm string) Result {
	d := c.decide(agent, perm, c.now())
	switch d.kind {
	case refusedSuspended:
		return Result{Reason: fmt.Sprintf("agent %s is suspended by guardrail %s", agent, d.susp.Rule)}
	case refusedUnknown:
		return Result{Reason: fmt.Sprintf("unknown agent %q", agent)}
	case refusedStale:
		return Result{Stale: true, Reason: fmt.Sprintf("the checker's view of grants is stale (no broker contact within %s): %s is refused until it is fresh", c.staleAfter, perm)}
	case allowedBase:
		return Result{Allowed: true, Base: true, Reason: fmt.Sprintf("%s is a base permission of %s", perm, agent)}
	case allowedGrant:
		return Result{Allowed: true, GrantID: d.grant.GrantID, ExpiresAt: d.grant.ExpiresAt,
			Reason: fmt.Sprintf("granted by %s until %s", d.grant.GrantID, d.grant.ExpiresAt.UTC().Format(time.RFC3339))}
	default:
		return Result{Reason: fmt.Sprintf("%s has no active grant of %s", agent, perm)}
	}
}

// AwaitGrant waits until the checker's view holds the grant grantID of
// agent, or ctx ends, and reports whether the view holds it (active or
// not: the caller still decides with Allowed or Check). It returns false at
// once for a grant the view saw end (revoked, deleted, expired away). It closes the gap
// between an agent learning of its grant (jit.granted, after the grant is
// stored) and the checker's watch delivering the same grant: a resource
// server that is shown a grant id, or an agent-side tool that answers right
// after a grant, waits for its own view instead of refusing. A grant that
// never reaches the view (unknown, or revoked before the view saw it) waits
// until ctx ends.
func (c *Checker) AwaitGrant(ctx context.Context, agent, grantID string) bool {
	for {
		c.mu.Lock()
		_, ok := c.grants[agent][grantID]
		if _, gone := c.ended[broker.GrantKey(agent, grantID)]; gone && !ok {
			c.mu.Unlock()
			return false
		}
		if !ok && c.changed == nil {
			c.changed = make(chan struct{})
		}
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		}
	}
}

// Suspended returns the agent's suspension, if it is suspended.
func (c *Checker) Suspended(agent string) (events.Suspension, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.suspended[agent]
	if !ok {
		return events.Suspension{}, false
	}
	return *s, true
}

// Grants returns the grants active now (status active, expires_at after the
// clock) of agent, or of every agent if agent is "", sorted by expires_at.
func (c *Checker) Grants(agent string) []events.Grant {
	now := c.now()
	var out []events.Grant
	c.mu.RLock()
	for a, m := range c.grants {
		if agent != "" && a != agent {
			continue
		}
		for _, g := range m {
			if g.ActiveAt(now) {
				out = append(out, *g)
			}
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(x, y events.Grant) int {
		if n := x.ExpiresAt.Compare(y.ExpiresAt); n != 0 {
			return n
		}
		if x.Agent != y.Agent {
			if x.Agent < y.Agent {
				return -1
			}
			return 1
		}
		if x.GrantID < y.GrantID {
			return -1
		}
		if x.GrantID > y.GrantID {
			return 1
		}
		return 0
	})
	return out
}

type kind int

const (
	refusedNoGrant kind = iota
	refusedSuspended
	refusedUnknown
	refusedStale
	allowedBase
	allowedGrant
)

type decision struct {
	kind  kind
	grant *events.Grant
	susp  *events.Suspension
}

func (d decision) allowed() bool { return d.kind == allowedBase || d.kind == allowedGrant }

// decide is the one place the rule lives; it returns pointers into the
// checker's maps (never mutated after insertion) so that it allocates
// nothing.
func (c *Checker) decide(agent, perm string, now time.Time) decision {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s, ok := c.suspended[agent]; ok {
		return decision{kind: refusedSuspended, susp: s}
	}
	var cfg *config.Config
	if c.cfg != nil {
		cfg = c.cfg.Current()
	}
	if cfg == nil {
		return decision{kind: refusedUnknown}
	}
	a, ok := cfg.Agent(agent)
	if !ok {
		return decision{kind: refusedUnknown}
	}
	if a.HasBase(perm) {
		return decision{kind: allowedBase}
	}
	if c.stale.Load() {
		return decision{kind: refusedStale}
	}
	if g := c.longest[permKey{agent, perm}]; g != nil && g.ActiveAt(now) {
		return decision{kind: allowedGrant, grant: g}
	}
	return decision{kind: refusedNoGrant}
}
