package revoker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/metrics"
)

// What the revoker shows of itself (issue 12): the grants it holds live,
// and every revocation that failed and is being retried, so that a
// revocation that cannot complete is seen within seconds instead of being
// retried silently (vault's "could not revoke" state). The report is kept
// in memory: each entry lasts from the first failed attempt to the first
// successful one, and a restart rebuilds it from the retries it makes.

// failingSet is the revoker's report of failing revocations, by grant key.
type failingSet struct {
	mu sync.Mutex
	m  map[string]*metrics.FailingRevocation
}

// observe records the outcome of one revocation attempt of key (agent's
// grant grantID, for reason): an error adds or updates its entry, a success
// removes it. It is deferred by revoke with a pointer to its result.
func (f *failingSet) observe(key, agent, grantID, reason string, now func() time.Time, errp *error) {
	err := *errp
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil || errors.Is(err, ErrBadKey) {
		delete(f.m, key)
		return
	}
	if errors.Is(err, context.Canceled) {
		// Stopping: not a failure of the revocation; the next start
		// finishes it.
		return
	}
	metrics.RevocationFailures.Inc()
	t := now().UTC()
	e := f.m[key]
	if e == nil {
		if f.m == nil {
			f.m = make(map[string]*metrics.FailingRevocation)
		}
		e = &metrics.FailingRevocation{GrantID: grantID, Agent: agent, Reason: reason, Since: t}
		f.m[key] = e
	}
	e.Attempts++
	e.LastError = err.Error()
	e.LastTry = t
}

// has reports whether an attempt to revoke key failed and was not yet
// followed by a success.
func (f *failingSet) has(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[key]
	return ok
}

func (f *failingSet) list() []metrics.FailingRevocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]metrics.FailingRevocation, 0, len(f.m))
	for _, e := range f.m {
		out = append(out, *e)
	}
	return out
}

// Failing lists the revocations that failed and are being retried.
func (s *Service) Failing() []metrics.FailingRevocation { return s.failing.list() }

// count is how many leases are active.
func (x *leaseIndex) count() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, keys := range x.agents {
		n += len(keys)
	}
	return n
}

// provideMetrics adds the live grants and the failing revocations to the
// process's metrics until the returned function is called.
func (s *Service) provideMetrics() func() {
	live := metrics.ProvideGauge("jit_grants_live", "Grants active now (leases in state active, from the revoker's ledger).",
		func() float64 { return float64(s.index.count()) })
	timers := metrics.ProvideGauge("jit_revoker_timers", "Expiry timers and queued revocations the revoker holds.",
		func() float64 { return float64(s.sched.pending()) })
	failing := metrics.ProvideFailing(s.failing.list)
	return func() { live(); timers(); failing() }
}
