package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/revoker"
	"github.com/nats-io/nats.go/jetstream"
)

// sequential measures the round trip of n requests sent one after another.
func sequential(ctx context.Context, c *client, n int) (dist, error) {
	lat := make(dist, 0, n)
	for i := range n {
		g, err := c.request(ctx, benchAgent(i), permWrite, time.Hour)
		if err != nil {
			return lat, err
		}
		lat = append(lat, g.at.Sub(g.sent))
	}
	return lat, nil
}

// throughput runs conc agents, each sending requests one after another for
// d (at least one each), and returns grants per second and the round trips.
func throughput(ctx context.Context, c *client, conc int, d time.Duration) (float64, dist, error) {
	var (
		mu   sync.Mutex
		lat  dist
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for w := range conc {
		wg.Go(func() {
			var mine dist
			// At least one request each (d may be 0: a warm-up).
			for first := true; first || time.Now().Before(deadline); first = false {
				g, err := c.request(ctx, benchAgent(w), permWrite, time.Hour)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				mine = append(mine, g.at.Sub(g.sent))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		return 0, lat, errs[0]
	}
	return float64(len(lat)) / elapsed.Seconds(), lat, nil
}

// expiryResult is how precisely grants ended.
type expiryResult struct {
	n, lost int
	// notStored are grants whose jit.granted the observer saw published
	// but the stream never stored (its leader died with it in flight; the
	// decision's redelivery then denied the request): not grants, so not
	// counted as lost.
	notStored      int
	lag            dist // jit.revoked arrival − expires_at
	late           time.Duration
	firstRefusal   dist // first refused probe − expires_at
	probed         int
	wrongReason    int
	createdPerSec  float64
	lastAfterFinal time.Duration // last revocation − the latest expires_at
	lastExpiry     time.Time     // the latest expires_at
	// slow are the grants whose jit.revoked came lateAfter or more after
	// their expires_at, latest first (at most maxSlow), and lost those
	// that never had one: logged, so that an outlier can be looked up in
	// jitd.log (--keep).
	slow       []lateGrant
	lostGrants []string
}

// lateGrant is a grant whose revocation came late, or never.
type lateGrant struct {
	id, agent string
	expiresAt time.Time
	lag       time.Duration
}

// lateAfter is how late a revocation must be for its grant to be named.
const lateAfter = time.Second

// maxSlow bounds the grants named per phase.
const maxSlow = 5

// expiry creates n grants through the pipeline with durations spread evenly
// over [minD, maxD], each on its own (agent, permission) pair so that a
// checker's answer is about that grant alone, probes the checker around
// each expires_at, and waits for every jit.revoked.
func expiry(ctx context.Context, c *client, chk *checker.Checker, n int, minD, maxD time.Duration, conc int) (expiryResult, error) {
	return expiryWith(ctx, c, chk, n, minD, maxD, conc, nil)
}

// expiryWith is expiry that calls created, if set, once every grant is
// created and before any has expired (the cluster run kills a node there).
func expiryWith(ctx context.Context, c *client, chk *checker.Checker, n int, minD, maxD time.Duration, conc int, created func()) (expiryResult, error) {
	res := expiryResult{n: n}
	grants := make([]grant, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	pr := newProber(chk)
	t0 := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				d := minD + time.Duration(int64(maxD-minD)*int64(i)/int64(max(1, n-1)))
				d = d.Round(time.Millisecond)
				agent, perm := expiryPair(i)
				g, err := c.request(ctx, agent, perm, d)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				grants[i] = g
				pr.add(g, perm)
			}
		})
	}
	wg.Wait()
	res.createdPerSec = float64(n) / time.Since(t0).Seconds()
	if err, _ := firstErr.Load().(error); err != nil {
		pr.stop()
		return res, err
	}
	if created != nil {
		created()
	}
	ids, last := idsAndLastExpiry(grants)
	revs := c.waitRevoked(ids, last.Add(30*time.Second))
	pr.wait(last.Add(time.Second))
	res.late, res.firstRefusal, res.probed = pr.results()
	ids, res.notStored = c.dropNotStored(ctx, grants, ids, revs)
	res.tally(ids, revs, last)
	return res, nil
}

// dropNotStored returns ids without the grants that had no jit.revoked
// because they never were grants: their jit.granted is not on the audit
// stream (the observer listens to events as published, not as stored), and
// how many those were. A grant it cannot check stays in.
func (c *client) dropNotStored(ctx context.Context, grants []grant, ids []string, revs map[string]revocation) ([]string, int) {
	missing := map[string]string{} // grant id -> agent
	for _, g := range grants {
		if _, ok := revs[g.id]; !ok {
			missing[g.id] = g.agent
		}
	}
	if len(missing) == 0 {
		return ids, 0
	}
	onStream := map[string]map[string]bool{} // agent -> its stored grant ids; nil: unreadable
	for _, agent := range missing {
		if _, read := onStream[agent]; !read {
			onStream[agent] = c.grantedOnStream(ctx, agent)
		}
	}
	kept, dropped := ids[:0:0], 0
	for _, id := range ids {
		if agent, m := missing[id]; m && onStream[agent] != nil && !onStream[agent][id] {
			dropped++
			continue
		}
		kept = append(kept, id)
	}
	return kept, dropped
}

// grantedOnStream returns the grant ids whose jit.granted the audit stream
// holds for agent, nil if it cannot read them all.
func (c *client) grantedOnStream(ctx context.Context, agent string) map[string]bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := map[string]bool{}
	cons, err := c.js.OrderedConsumer(ctx, broker.AuditStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.TypeGranted + "." + agent}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil
	}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return out // none stored
	}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil
		}
		if id, ok := strings.CutSuffix(m.Headers().Get(jetstream.MsgIDHeader), "/granted"); ok {
			out[id] = true
		}
		if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
			return out
		}
	}
}

// idsAndLastExpiry returns the grants' ids and their latest expires_at.
func idsAndLastExpiry(grants []grant) ([]string, time.Time) {
	var last time.Time
	ids := make([]string, 0, len(grants))
	for _, g := range grants {
		ids = append(ids, g.id)
		if g.expiresAt.After(last) {
			last = g.expiresAt
		}
	}
	return ids, last
}

// tally counts the revocations of ids that arrived (revs) against grants
// whose latest expires_at is last.
func (res *expiryResult) tally(ids []string, revs map[string]revocation, last time.Time) {
	var lastRev time.Time
	for _, id := range ids {
		r, ok := revs[id]
		if !ok {
			res.lost++
			if len(res.lostGrants) < maxSlow {
				res.lostGrants = append(res.lostGrants, id)
			}
			continue
		}
		if r.reason != events.RevokedExpired {
			res.wrongReason++
		}
		lag := r.at.Sub(r.expiresAt)
		res.lag = append(res.lag, lag)
		if lag >= lateAfter {
			res.slow = append(res.slow, lateGrant{id: id, agent: r.agent, expiresAt: r.expiresAt, lag: lag})
		}
		if r.at.After(lastRev) {
			lastRev = r.at
		}
	}
	sort.Slice(res.slow, func(i, j int) bool { return res.slow[i].lag > res.slow[j].lag })
	if len(res.slow) > maxSlow {
		res.slow = res.slow[:maxSlow]
	}
	res.lastAfterFinal = lastRev.Sub(last)
	res.lastExpiry = last
}

// logLate names the grants of ex whose revocation came late or never.
func logLate(logf func(string, ...any), phase string, ex expiryResult) {
	for _, g := range ex.slow {
		logf("%s: jit.revoked of %s (agent %s) came %s after its expires_at %s", phase, g.id, g.agent,
			g.lag.Round(time.Millisecond), g.expiresAt.UTC().Format(time.RFC3339Nano))
	}
	for _, id := range ex.lostGrants {
		logf("%s: no jit.revoked of %s", phase, id)
	}
}

// prober asks a checker, around each grant's expires_at, whether the grant
// still allows its permission.
type prober struct {
	chk  *checker.Checker
	mu   sync.Mutex
	todo []probe
	quit chan struct{}
	done chan struct{}

	late         time.Duration
	firstRefusal dist
	probed       int
}

type probe struct {
	g        grant
	perm     string
	seenTrue bool
}

func newProber(chk *checker.Checker) *prober {
	p := &prober{chk: chk, quit: make(chan struct{}), done: make(chan struct{}), late: -time.Hour}
	if chk == nil {
		close(p.done)
		return p
	}
	go p.loop()
	return p
}

func (p *prober) add(g grant, perm string) {
	if p.chk == nil || g.expiresAt.IsZero() {
		return
	}
	p.mu.Lock()
	p.todo = append(p.todo, probe{g: g, perm: perm})
	p.mu.Unlock()
}

// loop probes every pending grant whose expires_at is within 2 ms, every
// 200 µs, until its checker answer turns false. A true answer obtained by a
// call that started after expires_at is enforcement that came late.
func (p *prober) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.quit:
			return
		default:
		}
		p.mu.Lock()
		now := time.Now()
		keep := p.todo[:0]
		for _, pb := range p.todo {
			if now.Before(pb.g.expiresAt.Add(-2 * time.Millisecond)) {
				if !pb.seenTrue && now.Before(pb.g.expiresAt.Add(-50*time.Millisecond)) {
					pb.seenTrue = p.chk.Allowed(pb.g.agent, pb.perm)
				}
				keep = append(keep, pb)
				continue
			}
			start := time.Now()
			ok := p.chk.Allowed(pb.g.agent, pb.perm)
			if ok {
				pb.seenTrue = true
				if l := start.Sub(pb.g.expiresAt); l > p.late {
					p.late = l
				}
				keep = append(keep, pb)
				continue
			}
			if pb.seenTrue {
				p.probed++
				p.firstRefusal = append(p.firstRefusal, start.Sub(pb.g.expiresAt))
			}
		}
		p.todo = keep
		p.mu.Unlock()
		time.Sleep(200 * time.Microsecond)
	}
}

// wait lets the prober run until deadline or until nothing is left to probe.
func (p *prober) wait(deadline time.Time) {
	for time.Now().Before(deadline) {
		p.mu.Lock()
		n := len(p.todo)
		p.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.stop()
}

func (p *prober) stop() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	<-p.done
}

func (p *prober) results() (time.Duration, dist, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.late, p.firstRefusal, p.probed
}

// storm creates n grants that all end within the same second, and measures
// how long after that second the last jit.revoked arrives.
func storm(ctx context.Context, c *client, n, conc int, rate float64) (expiryResult, error) {
	res := expiryResult{n: n}
	if rate <= 0 {
		rate = 1000
	}
	// Leave enough time to create them all, plus a margin; the target is
	// a whole second so that every grant ends within it.
	create := time.Duration(float64(n)/rate*1.5*float64(time.Second)) + 3*time.Second
	target := time.Now().Add(create).Truncate(time.Second).Add(time.Second)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	grants := make([]grant, n)
	made := atomic.Int64{}
	t0 := time.Now()
	for w := range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				// Spread over the target second by request index.
				end := target.Add(time.Duration(i) * time.Second / time.Duration(n+1))
				d := time.Until(end).Round(time.Millisecond)
				if d < 1500*time.Millisecond {
					firstErr.CompareAndSwap(nil, fmt.Errorf("storm: creating %d grants took too long (%d made)", n, made.Load()))
					return
				}
				g, err := c.request(ctx, benchAgent(w), permWrite, d)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				grants[i] = g
				made.Add(1)
			}
		})
	}
	wg.Wait()
	res.createdPerSec = float64(made.Load()) / time.Since(t0).Seconds()
	if err, _ := firstErr.Load().(error); err != nil {
		return res, err
	}
	ids, last := idsAndLastExpiry(grants)
	res.tally(ids, c.waitRevoked(ids, last.Add(60*time.Second)), last)
	return res, nil
}

// guardrailResult times a guardrail from its event to enforcement.
type guardrailResult struct {
	total, refusal, revoked dist
	lost                    int
}

// guardrails gives each of agents agents k grants, then fires a guardrail
// against each in turn and measures until every grant of the agent is
// revoked and the checker refuses it.
func guardrails(ctx context.Context, c *client, chk *checker.Checker, agents, k int) (guardrailResult, error) {
	var res guardrailResult
	gjs, err := c.jsAs(auth.Principal{Kind: auth.KindGuardrail, ID: benchGuard})
	if err != nil {
		return res, err
	}
	for a := range agents {
		agent := guardAgent(a)
		ids := make([]string, 0, k)
		for range k {
			g, err := c.request(ctx, agent, permWrite, time.Hour)
			if err != nil {
				return res, err
			}
			ids = append(ids, g.id)
		}
		// The checker must have seen the grants for its refusal to mean
		// anything.
		for !chk.Allowed(agent, permWrite) {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			time.Sleep(time.Millisecond)
		}
		data := events.GuardrailFired{Agent: agent, Rule: "bench-guardrail", Detail: "benchmark", FiredAt: time.Now().UTC()}
		e, err := events.New(events.NewID("grd"), events.TypeGuardrailFired, "jitbench", agent, data)
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		m, err := broker.ToMsg(events.Subject(events.TypeGuardrailFired, agent), e)
		if err != nil {
			return res, err
		}
		if _, err := gjs.PublishMsg(ctx, m); err != nil {
			return res, err
		}
		var refused time.Time
		for deadline := t0.Add(10 * time.Second); time.Now().Before(deadline); {
			s := time.Now()
			if !chk.Allowed(agent, permWrite) {
				refused = s
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		revs := c.waitRevoked(ids, t0.Add(10*time.Second))
		var lastRev time.Time
		for _, id := range ids {
			r, ok := revs[id]
			if !ok {
				res.lost++
				continue
			}
			if r.at.After(lastRev) {
				lastRev = r.at
			}
		}
		if refused.IsZero() || len(revs) < len(ids) {
			continue
		}
		res.refusal = append(res.refusal, refused.Sub(t0))
		res.revoked = append(res.revoked, lastRev.Sub(t0))
		end := lastRev
		if refused.After(end) {
			end = refused
		}
		res.total = append(res.total, end.Sub(t0))
	}
	return res, nil
}

// bulkGrants writes n leases and grant keys straight into KV, the way the
// approval service does (lease first, then the grant key with its TTL), with
// asynchronous publishes. No jit.granted events are published: this is a
// way to reach a large number of live grants fast, not a pipeline figure.
func bulkGrants(ctx context.Context, c *client, n int, tag string) (float64, error) {
	ajs, err := jetstream.New(c.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	t0 := time.Now()
	for i := range n {
		agent := benchAgent(i % benchAgents)
		reqID := fmt.Sprintf("req_%s%07d", tag, i)
		gid := events.GrantIDFor(reqID)
		g := events.Grant{
			GrantID: gid, RequestID: reqID, Agent: agent, Permissions: []string{permWrite},
			Reason: "benchmark bulk grant", Rule: "bench-auto", Mode: "auto-approve",
			ApprovedBy: events.Actor{Kind: events.ActorSystem, ID: "policy"},
			GrantedAt:  now,
			// Spread over an hour after the run, so none ends during it.
			ExpiresAt: now.Add(2*time.Hour + time.Duration(i)*time.Hour/time.Duration(n)),
			Status:    events.GrantActive,
		}
		lease, _ := json.Marshal(events.Lease{Grant: g, State: events.LeaseActive})
		val, _ := json.Marshal(g)
		key := broker.GrantKey(agent, gid)
		if _, err := ajs.PublishAsync("$KV."+broker.BucketLeases+"."+key, lease, jetstream.WithStallWait(30*time.Second)); err != nil {
			return 0, err
		}
		if _, err := ajs.PublishAsync("$KV."+broker.BucketGrants+"."+key, val,
			jetstream.WithMsgTTL(broker.TTLFor(g.ExpiresAt, time.Now())), jetstream.WithStallWait(30*time.Second)); err != nil {
			return 0, err
		}
	}
	select {
	case <-ajs.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("bulk writes not acknowledged within 2 minutes")
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// checkLatency times n Allowed calls on random agents.
func checkLatency(chk *checker.Checker, n int) dist {
	lat := make(dist, 0, n)
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		agent := benchAgent(r.IntN(benchAgents))
		s := time.Now()
		_ = chk.Allowed(agent, permWrite)
		lat = append(lat, time.Since(s))
	}
	return lat
}

// sortedKeys is used for stable output.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// settle waits until the broker has written the expiry markers of every
// grant that ended by lastExpiry (its TTL sweep runs in whole seconds, about
// every 250 ms: BROKER-FACTS) and the revoker has handled them all, so that
// the next phase is not measured while the revoker still works through a
// storm's backstop markers.
func settle(ctx context.Context, c *client, lastExpiry time.Time) error {
	if wait := time.Until(lastExpiry.Add(2 * time.Second)); wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	cons, err := c.js.Consumer(ctx, "KV_"+broker.BucketGrants, revoker.DurableExpiry)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		ci, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the revoker did not catch up with the expiry markers within 60 s")
}
