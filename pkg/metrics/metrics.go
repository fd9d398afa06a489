// Package metrics is the process's Prometheus instrumentation: one registry
// per process (jitd runs every service in one process and serves them all
// on one /metrics), the jit_* collectors, and the few hooks the broker
// adapter and the services call.
//
// Most series are derived from the events a process stores on the audit
// stream (Observe, called by broker.Publisher for each event it stored for
// the first time): an event is the one fact every service already agrees
// on, so counting it where it is published needs no change to the
// services' logic, and a retried publish (a duplicate) is never counted
// twice. The rest are read at scrape time from the state that holds them
// (durable consumers, the revoker's ledger, the pending bucket).
//
// The collectors are package variables, as is usual with Prometheus: the
// hooks live in shared code (pkg/broker) whose signatures must not grow a
// registry parameter.
package metrics

import (
	"net/http"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every jit_* collector of the process, and Go's runtime and
// process collectors.
var Registry = prometheus.NewRegistry()

// latencyBuckets span a grant's path on one server (sub-millisecond) to a
// slow human approval (minutes).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900}

// lagBuckets are for revocation lag: the timer fires at expires_at; the
// TTL marker backstop comes up to a second or so later.
var lagBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300}

var (
	// Requests counts decisions by outcome (approved, denied, pending) and
	// mode (auto-approve, policy, require-approval, human, timeout, ...).
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_requests_total",
		Help: "Decisions on access requests, by outcome and mode (one per jit.decided event stored).",
	}, []string{"outcome", "mode"})

	// DecisionLatency is from the request's requested_at to the policy's
	// decided_at.
	DecisionLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "jit_decision_latency_seconds",
		Help:    "Time from a request's requested_at to the policy service's decision.",
		Buckets: latencyBuckets,
	})

	// Grants counts jit.granted events stored.
	Grants = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_grants_total",
		Help: "Grants issued (jit.granted events stored), by mode.",
	}, []string{"mode"})

	// RequestToGrant is from requested_at to the grant's granted_at
	// (includes any human wait).
	RequestToGrant = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "jit_request_to_grant_seconds",
		Help:    "Time from a request's requested_at to its grant's announcement, by mode.",
		Buckets: latencyBuckets,
	}, []string{"mode"})

	// Revocations counts jit.revoked events by reason.
	Revocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_revocations_total",
		Help: "Grants revoked (jit.revoked events stored), by reason.",
	}, []string{"reason"})

	// RevocationLag is how late a revocation was: from expires_at (reason
	// expired) or from the guardrail's fired_at (reason guardrail) to the
	// jit.revoked event.
	RevocationLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "jit_revocation_lag_seconds",
		Help:    "Time from a grant's expires_at (reason expired) or the guardrail's fired_at (reason guardrail) to its jit.revoked event.",
		Buckets: lagBuckets,
	}, []string{"reason"})

	// GuardrailsFired counts guardrail.fired events stored, by rule.
	GuardrailsFired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_guardrails_fired_total",
		Help: "Guardrail events accepted (guardrail.fired stored), by rule.",
	}, []string{"rule"})

	// Suspensions counts jit.suspended events stored.
	Suspensions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jit_suspensions_total",
		Help: "Agents suspended (jit.suspended events stored).",
	})

	// Reinstatements counts jit.reinstated events stored.
	Reinstatements = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jit_reinstatements_total",
		Help: "Suspended agents reinstated (jit.reinstated events stored).",
	})

	// Rejected counts jit.rejected events by stage and code.
	Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_rejected_total",
		Help: "Input refused (jit.rejected events stored), by stage and code.",
	}, []string{"stage", "code"})

	// Published counts every event this process stored, by type: the
	// audit stream's write rate.
	Published = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_events_published_total",
		Help: "Events this process stored on the audit stream, by type (duplicates not counted).",
	}, []string{"type"})

	// PublishErrors counts publishes the stream did not acknowledge.
	PublishErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jit_event_publish_errors_total",
		Help: "Publishes to the audit stream that failed (no acknowledgement); the caller retries.",
	})

	// HandlerPanics counts handler panics recovered by the consume loop.
	HandlerPanics = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_handler_panics_total",
		Help: "Handler panics recovered by a consume loop (the message is terminated and reported as jit.rejected), by durable consumer.",
	}, []string{"consumer"})

	// HandlerFailures counts handler errors that will be retried.
	HandlerFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_handler_failures_total",
		Help: "Messages whose handler failed and which will be redelivered, by durable consumer.",
	}, []string{"consumer"})

	// Terminated counts messages a consume loop terminated (bad input or a
	// panic).
	Terminated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_messages_terminated_total",
		Help: "Messages terminated by a consume loop (permanent failure: bad input or a handler panic), by durable consumer.",
	}, []string{"consumer"})

	// ConsumerRecreated counts durable consumers created again after they
	// were deleted from under a service (broker.Durable).
	ConsumerRecreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_consumer_recreated_total",
		Help: "Durable consumers created again by a service after they were deleted from under it, by durable consumer.",
	}, []string{"consumer"})

	// RevocationFailures counts failed revocation attempts (each is
	// retried).
	RevocationFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jit_revocation_failures_total",
		Help: "Revocation attempts that failed and will be retried.",
	})

	// APICalls counts API calls by endpoint subject and answer status.
	APICalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jit_api_calls_total",
		Help: "API calls answered, by endpoint subject and status (200 or the refusal's status).",
	}, []string{"endpoint", "status"})

	// APIDuration is the time to answer an API call.
	APIDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "jit_api_call_duration_seconds",
		Help:    "Time to answer an API call, by endpoint subject.",
		Buckets: latencyBuckets,
	}, []string{"endpoint"})

	// BuildInfo is 1, labelled with the version.
	BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jit_build_info",
		Help: "Always 1; labels name the version the services announce and the Go version.",
	}, []string{"version", "goversion"})
)

// static are the jit_* collectors registered at start (Names).
var static = []prometheus.Collector{
	Requests, DecisionLatency, Grants, RequestToGrant, Revocations, RevocationLag,
	GuardrailsFired, Suspensions, Reinstatements, Rejected, Published, PublishErrors,
	HandlerPanics, HandlerFailures, Terminated, ConsumerRecreated, RevocationFailures, APICalls, APIDuration,
	BuildInfo, consumers,
}

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), gauges)
	Registry.MustRegister(static...)
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	BuildInfo.WithLabelValues(version, goVersion).Set(1)
}

// version is set by SetVersion (the services' announced version).
var version = "unknown"

// SetVersion relabels jit_build_info with v.
func SetVersion(v string) {
	BuildInfo.Reset()
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	version = v
	BuildInfo.WithLabelValues(v, goVersion).Set(1)
}

// Handler serves Registry in the Prometheus text format. A collector that
// fails (a consumer whose info cannot be read) leaves its series out and
// the rest is served.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Names are the names of the jit_* series the code always registers,
// whether or not they have a value yet (a labelled counter appears in a
// scrape only once it has been counted). Series that running services
// provide (Provide) appear in a scrape of them instead.
func Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range static {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// since returns the seconds from a to b, or false if either is unset or b
// is before a by more than clock skew could explain.
func since(a, b time.Time) (float64, bool) {
	if a.IsZero() || b.IsZero() {
		return 0, false
	}
	d := b.Sub(a).Seconds()
	if d < 0 {
		// Clocks of two processes: a small negative is skew, not lag.
		d = 0
	}
	return d, true
}
