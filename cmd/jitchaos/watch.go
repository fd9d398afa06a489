package main

import (
	"container/heap"
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// keySeen is a key of the grants bucket as a checker saw it.
type keySeen struct {
	grantID, agent string
	firstSeen      time.Time
	put            bool // a value was seen, not only a delete or an expiry marker
	active         bool // a value with status active was seen
	expiresAt      time.Time
}

// watcher follows the grants bucket as a checker does (the checker's
// credential, the republished changes on jitkv.jit_grants.>, a read of the
// bucket after each reconnect), remembers every key it ever saw, and feeds
// every grant to the prober. It also runs a pkg/checker for the prober.
type watcher struct {
	nc  *nats.Conn
	f   *broker.BucketFollower
	chk *checker.Checker
	pr  *prober

	mu   sync.Mutex
	keys map[string]*keySeen

	cancel context.CancelFunc
	done   chan struct{}
}

// startWatcher connects as the default checker (credsDir/checker.creds).
func startWatcher(ctx context.Context, url, credsDir string) (*watcher, error) {
	opts, err := auth.ClientOptions{Creds: filepath.Join(credsDir, auth.DefaultChecker.CredsFile())}.NATSOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("jitchaos checker"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	js, err := auth.JetStream(nc, auth.DefaultChecker, true)
	if err != nil {
		nc.Close()
		return nil, err
	}
	src, err := config.Follow(ctx, js, zerolog.Nop())
	if err != nil {
		nc.Close()
		return nil, err
	}
	w := &watcher{nc: nc, keys: map[string]*keySeen{}, done: make(chan struct{})}
	w.chk = checker.New(js, src)
	if err := w.chk.Start(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	w.pr = newProber(w.chk)
	w.f, err = broker.FollowBucket(ctx, nc, broker.APIPrefixOf(js), broker.BucketGrants, w.apply)
	if err != nil {
		w.pr.stop()
		w.chk.Stop()
		nc.Close()
		return nil, err
	}
	// Catch up after a reconnect or a dropped change, as the checker does
	// with its own followers.
	wctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	go func() {
		defer close(w.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				_ = w.f.Check(wctx)
			}
		}
	}()
	return w, nil
}

func (w *watcher) apply(c broker.KVChange) {
	agent, id, ok := broker.SplitKey(c.Key)
	if !ok {
		return
	}
	now := time.Now()
	w.mu.Lock()
	k := w.keys[c.Key]
	if k == nil {
		k = &keySeen{grantID: id, agent: agent, firstSeen: now}
		w.keys[c.Key] = k
	}
	var g events.Grant
	put := c.Op == jetstream.KeyValuePut && json.Unmarshal(c.Value, &g) == nil
	if put {
		k.put = true
		k.expiresAt = g.ExpiresAt
		if g.Status == events.GrantActive {
			k.active = true
		}
	}
	w.mu.Unlock()
	if put && g.Status == events.GrantActive && len(g.Permissions) > 0 {
		w.pr.add(g.GrantID, g.Agent, g.Permissions[0], g.ExpiresAt)
	}
}

// seen returns a copy of every key seen.
func (w *watcher) seen() map[string]keySeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]keySeen, len(w.keys))
	for k, v := range w.keys {
		out[k] = *v
	}
	return out
}

func (w *watcher) stop() {
	w.cancel()
	<-w.done
	w.f.Stop()
	w.pr.stop()
	w.chk.Stop()
	w.nc.Close()
}

// prober asks the checker, from each grant's end on, whether the grant
// still allows its permission: a grant ends at its expires_at or when its
// jit.revoked arrives, whichever is first. An answer "allowed by this
// grant" from a check that started after the end is a permission usable
// after its end. Each grant is probed every 200 µs from its end until the
// checker no longer answers with it (at most for giveUp).
type prober struct {
	chk  *checker.Checker
	mu   sync.Mutex
	all  map[string]*probe
	due  probeHeap
	wake chan struct{}
	quit chan struct{}
	done chan struct{}

	checks     int
	violations int
	lateGrants map[string]time.Duration // grant → latest allowed check after its end
}

const giveUp = 2 * time.Second

type probe struct {
	grantID, agent, perm string
	expiresAt, revokedAt time.Time
	finished             bool
}

func (p *probe) end() time.Time {
	if !p.revokedAt.IsZero() && p.revokedAt.Before(p.expiresAt) {
		return p.revokedAt
	}
	return p.expiresAt
}

type dueEntry struct {
	at time.Time
	id string
}

type probeHeap []dueEntry

func (h probeHeap) Len() int           { return len(h) }
func (h probeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h probeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *probeHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *probeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newProber(chk *checker.Checker) *prober {
	p := &prober{chk: chk, all: map[string]*probe{}, wake: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}), lateGrants: map[string]time.Duration{}}
	go p.loop()
	return p
}

// add starts probing a grant, once per grant id.
func (p *prober) add(grantID, agent, perm string, expiresAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.all[grantID]; ok || expiresAt.IsZero() {
		return
	}
	pb := &probe{grantID: grantID, agent: agent, perm: perm, expiresAt: expiresAt}
	p.all[grantID] = pb
	heap.Push(&p.due, dueEntry{at: pb.end(), id: grantID})
	p.poke()
}

// revoked records a grant's jit.revoked; a revocation before expires_at
// moves the grant's end forward.
func (p *prober) revoked(grantID string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pb := p.all[grantID]
	if pb == nil || !pb.revokedAt.IsZero() {
		return
	}
	pb.revokedAt = at
	if at.Before(pb.expiresAt) {
		heap.Push(&p.due, dueEntry{at: at, id: grantID})
		p.poke()
	}
}

func (p *prober) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *prober) loop() {
	defer close(p.done)
	active := map[string]*probe{}
	for {
		now := time.Now()
		p.mu.Lock()
		for p.due.Len() > 0 && !p.due[0].at.After(now) {
			e := heap.Pop(&p.due).(dueEntry)
			if pb := p.all[e.id]; pb != nil && !pb.finished {
				active[e.id] = pb
			}
		}
		next := time.Duration(50 * time.Millisecond)
		if p.due.Len() > 0 {
			next = min(next, time.Until(p.due[0].at))
		}
		p.mu.Unlock()
		if len(active) == 0 {
			t := time.NewTimer(max(next, 0))
			select {
			case <-p.quit:
				t.Stop()
				return
			case <-p.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		for id, pb := range active {
			p.mu.Lock()
			end := pb.end()
			p.mu.Unlock()
			start := time.Now()
			if start.Before(end) {
				continue
			}
			r := p.chk.Check(pb.agent, pb.perm)
			late := start.Sub(end)
			p.mu.Lock()
			p.checks++
			usable := r.Allowed && r.GrantID == pb.grantID
			if usable {
				p.violations++
				if late > p.lateGrants[id] {
					p.lateGrants[id] = late
				}
			}
			if !usable || late > giveUp {
				pb.finished = true
				delete(active, id)
			}
			p.mu.Unlock()
		}
		select {
		case <-p.quit:
			return
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// pending is how many grants are still waiting to be probed.
func (p *prober) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pb := range p.all {
		if !pb.finished {
			n++
		}
	}
	return n
}

func (p *prober) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

// probeResult is what the prober found.
type probeResult struct {
	grants     int // grants known to the prober
	probed     int // grants checked at or after their end
	checks     int
	violations int // checks that answered allowed by a grant after its end
	lateGrants int // grants with such a check
	lateMax    time.Duration
}

func (p *prober) result() probeResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := probeResult{grants: len(p.all), checks: p.checks, violations: p.violations, lateGrants: len(p.lateGrants)}
	for _, pb := range p.all {
		if pb.finished {
			r.probed++
		}
	}
	for _, l := range p.lateGrants {
		r.lateMax = max(r.lateMax, l)
	}
	return r
}
