package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// provided are series whose values a running service reads from its own
// state at scrape time (live grants from the revoker's ledger, pending
// approvals from the bucket, the configuration's revision): registered
// when the service starts, removed when it stops.
type provided struct {
	mu sync.Mutex
	n  int
	m  map[string]provider // by name: a later provider of a name replaces an earlier one
}

type provider struct {
	id      int
	collect func(ch chan<- prometheus.Metric)
}

var gaugeSet = &provided{m: map[string]provider{}}

var gauges prometheus.Collector = gaugeSet

// Describe sends nothing: the set of series changes as services start and
// stop (an unchecked collector).
func (p *provided) Describe(chan<- *prometheus.Desc) {}

func (p *provided) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	ps := make([]provider, 0, len(p.m))
	for _, v := range p.m {
		ps = append(ps, v)
	}
	p.mu.Unlock()
	for _, v := range ps {
		v.collect(ch)
	}
}

// Provide makes collect part of every scrape under name until remove is
// called; providing a name again replaces the earlier provider (and its
// remove then does nothing).
func Provide(name string, collect func(ch chan<- prometheus.Metric)) (remove func()) {
	p := gaugeSet
	p.mu.Lock()
	p.n++
	id := p.n
	p.m[name] = provider{id: id, collect: collect}
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.m[name].id == id {
			delete(p.m, name)
		}
	}
}

// ProvideGauge is Provide for one gauge without labels whose value f reads.
func ProvideGauge(name, help string, f func() float64) (remove func()) {
	desc := prometheus.NewDesc(name, help, nil, nil)
	return Provide(name, func(ch chan<- prometheus.Metric) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, f())
	})
}

// FailingRevocation is a revocation that failed and is being retried.
type FailingRevocation struct {
	GrantID   string    `json:"grant_id"`
	Agent     string    `json:"agent"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error"`
	LastTry   time.Time `json:"last_try"`
}

var (
	failingMu  sync.Mutex
	failingID  int
	failingFns = map[int]func() []FailingRevocation{}
)

var descFailing = prometheus.NewDesc("jit_revocations_failing", "Revocations that failed and are being retried (each stays until it succeeds).", nil, nil)
var descFailingOldest = prometheus.NewDesc("jit_revocation_failing_oldest_seconds", "How long the oldest failing revocation has been failing (0 if none).", nil, nil)

func init() {
	Provide("jit_revocations_failing", func(ch chan<- prometheus.Metric) {
		fs := Failing()
		var oldest float64
		for _, f := range fs {
			oldest = max(oldest, time.Since(f.Since).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, float64(len(fs)))
		ch <- prometheus.MustNewConstMetric(descFailingOldest, prometheus.GaugeValue, oldest)
	})
}

// ProvideFailing adds f's failing revocations to Failing and to the
// jit_revocations_failing series until remove is called (a revoker, from
// Start to Stop).
func ProvideFailing(f func() []FailingRevocation) (remove func()) {
	failingMu.Lock()
	failingID++
	id := failingID
	failingFns[id] = f
	failingMu.Unlock()
	return func() {
		failingMu.Lock()
		delete(failingFns, id)
		failingMu.Unlock()
	}
}

// Failing lists the failing revocations of every revoker of the process,
// oldest first.
func Failing() []FailingRevocation {
	failingMu.Lock()
	fns := make([]func() []FailingRevocation, 0, len(failingFns))
	for _, f := range failingFns {
		fns = append(fns, f)
	}
	failingMu.Unlock()
	var out []FailingRevocation
	for _, f := range fns {
		out = append(out, f()...)
	}
	slices.SortFunc(out, func(a, b FailingRevocation) int { return a.Since.Compare(b.Since) })
	return out
}
