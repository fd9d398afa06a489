package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"strconv"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
)

// StatusSubjectPrefix prefixes the subject of every service's "status"
// endpoint: $SRV.JIT.STATUS.<micro service name>. It is under $SRV.>, which
// every service may already serve and the operator may already call, so
// no permission changes for it.
const StatusSubjectPrefix = "$SRV.JIT.STATUS."

// StatusEndpoint is the name of the endpoint whose $SRV.STATS data is the
// instance's Status.
const StatusEndpoint = "status"

// Status is what one service instance reports about itself: the data of
// its "status" endpoint in $SRV.STATS, and the answer of that endpoint.
// `jitctl status` reads it.
type Status struct {
	// Service is the service's name ("revoker").
	Service string `json:"service"`
	// Ready is the instance's readiness (/readyz); NotReady says why not.
	Ready    bool   `json:"ready"`
	NotReady string `json:"not_ready,omitempty"`
	// ConfigRevision is the revision of the configuration it follows.
	ConfigRevision uint64 `json:"config_revision"`
	// Consumers are its durable consumers' backlogs.
	Consumers []metrics.ConsumerState `json:"consumers"`
	// FailingRevocations (the revoker) are revocations that failed and are
	// retried.
	FailingRevocations []metrics.FailingRevocation `json:"failing_revocations,omitempty"`
}

// serviceName is the service a micro service name stands for
// ("jit-revoker" → "revoker").
func serviceName(micro string) string { return strings.TrimPrefix(micro, "jit-") }

// StatusOf builds the Status of service name running on d.
func StatusOf(ctx context.Context, name string, d Deps) Status {
	st := Status{Service: name, Consumers: metrics.Consumers(ctx, name)}
	if d.Config != nil {
		st.ConfigRevision = d.Config.Revision()
	}
	if name == "revoker" {
		st.FailingRevocations = metrics.Failing()
	}
	if err := readiness(d, st.Consumers); err != nil {
		st.NotReady = err.Error()
	} else {
		st.Ready = true
	}
	return st
}

// Ready reports whether service name on d can do its work: connected,
// configuration loaded, and every durable consumer it started readable on
// the broker (so the stream and the consumer are in place). nil means
// ready.
func Ready(ctx context.Context, name string, d Deps) error {
	return readiness(d, metrics.Consumers(ctx, name))
}

func readiness(d Deps, cs []metrics.ConsumerState) error {
	var errs []error
	if d.NC == nil || !d.NC.IsConnected() {
		errs = append(errs, errors.New("not connected to NATS"))
	}
	if d.Config == nil || d.Config.Current() == nil {
		errs = append(errs, errors.New("no configuration loaded"))
	}
	for _, c := range cs {
		if c.Error != "" {
			errs = append(errs, fmt.Errorf("consumer %s on %s: %s", c.Durable, c.Stream, c.Error))
		}
	}
	return errors.Join(errs...)
}

// addStatusEndpoint adds the "status" endpoint to svc, whose stats data
// and answer are the instance's Status.
func addStatusEndpoint(svc micro.Service, name string, d Deps) error {
	return svc.AddEndpoint(StatusEndpoint, micro.HandlerFunc(func(req micro.Request) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = req.RespondJSON(StatusOf(ctx, name, d))
	}), micro.WithEndpointSubject(StatusSubjectPrefix+"jit-"+name))
}

// statsHandler makes the "status" endpoint's $SRV.STATS data the Status.
func statsHandler(name string, d *Deps) micro.StatsHandler {
	return func(ep *micro.Endpoint) any {
		if ep.Name != StatusEndpoint {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return StatusOf(ctx, name, *d)
	}
}

// Stats asks the instances of micro service name ("jit-revoker"; "" for
// every JIT service) for their stats on the services API ($SRV.STATS) and
// collects the answers of JIT services ("jit-…") for at most wait, ending
// quiet after the last answer (they come together). An instance that does
// not answer in time is left out; only a failure to ask, or ctx ending, is
// an error. jitctl status and the approver console read the instances'
// Status this way (StatusIn).
func Stats(ctx context.Context, nc *nats.Conn, name string, wait, quiet time.Duration) ([]micro.Stats, error) {
	subj, err := micro.ControlSubject(micro.StatsVerb, name, "")
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	var out []micro.Stats
	for {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if len(out) > 0 {
			left = min(left, quiet)
		}
		mctx, cancel := context.WithTimeout(ctx, left)
		m, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			break
		}
		var s micro.Stats
		if json.Unmarshal(m.Data, &s) != nil || !strings.HasPrefix(s.Name, "jit-") {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// StatusIn is the Status an instance's stats carry (the data of its
// "status" endpoint); nil if they carry none (an older version).
func StatusIn(s micro.Stats) *Status {
	for _, ep := range s.Endpoints {
		if ep.Name != StatusEndpoint || len(ep.Data) == 0 {
			continue
		}
		var st Status
		if json.Unmarshal(ep.Data, &st) == nil {
			return &st
		}
	}
	return nil
}

// StatusService starts a micro service for a service that serves no API
// of its own (the auditor): it answers the services API ($SRV.PING, INFO,
// STATS) and its "status" endpoint, so that `jitctl status` lists it. Stop
// it when the service stops.
func StatusService(d Deps, name, description string) (micro.Service, error) {
	svc, err := micro.AddService(d.NC, micro.Config{
		Name: "jit-" + name, Version: Version, Description: description, QueueGroup: "jit-" + name,
		StatsHandler: statsHandler(name, &d),
	})
	if err != nil {
		return nil, fmt.Errorf("status service %s: %w", name, err)
	}
	if err := addStatusEndpoint(svc, name, d); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

// observeCall counts one API call (the one entry every endpoint shares).
func observeCall(subject string, start time.Time, err error) {
	if !metrics.Enabled() {
		return
	}
	status := "200"
	if err != nil {
		var ae *broker.APIError
		if errors.As(err, &ae) {
			status = strconv.Itoa(ae.Status)
		} else {
			status = "500"
		}
	}
	metrics.APICalls.WithLabelValues(subject, status).Inc()
	metrics.APIDuration.WithLabelValues(subject).Observe(time.Since(start).Seconds())
}

// ProvideGauges adds the process-wide gauges that d holds (configuration
// revision, suspended agents; with pending, the approval service's pending
// approvals) to the metrics until remove is called.
func ProvideGauges(d Deps, pending bool) (remove func()) {
	metrics.SetVersion(Version)
	rev := prometheus.NewDesc("jit_config_revision", "Revision of the active configuration in the configuration bucket, as this process follows it.", nil, nil)
	loaded := prometheus.NewDesc("jit_config_loaded", "1 once a configuration is loaded.", nil, nil)
	susp := prometheus.NewDesc("jit_agents_suspended", "Agents suspended now, as this process's suspension view holds them.", nil, nil)
	return metrics.Provide("jit_config", func(ch chan<- prometheus.Metric) {
		if d.Config != nil {
			ch <- prometheus.MustNewConstMetric(rev, prometheus.GaugeValue, float64(d.Config.Revision()))
			l := 0.0
			if d.Config.Current() != nil {
				l = 1
			}
			ch <- prometheus.MustNewConstMetric(loaded, prometheus.GaugeValue, l)
		}
		if d.Suspensions != nil {
			ch <- prometheus.MustNewConstMetric(susp, prometheus.GaugeValue, float64(d.Suspensions.Held()))
		}
		if pending && d.Buckets.Pending != nil {
			collectPending(d, ch)
		}
	})
}

var (
	descPending       = prometheus.NewDesc("jit_pending_approvals", "Requests waiting for a human approver (keys of the pending bucket).", nil, nil)
	descPendingOldest = prometheus.NewDesc("jit_pending_approval_oldest_age_seconds", "Age of the oldest request waiting for an approver (0 if none).", nil, nil)
)

// collectPending reads the pending bucket's keys (their metadata only: a
// watch that stops at the end of the initial values).
func collectPending(d Deps, ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w, err := d.Buckets.Pending.WatchAll(ctx, jetstream.MetaOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return
	}
	defer func() { _ = w.Stop() }()
	n, oldest := 0, time.Time{}
	now := d.Clock()()
	for {
		select {
		case <-ctx.Done():
			return // incomplete: leave the series out rather than under-count
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				age := 0.0
				if !oldest.IsZero() {
					age = max(now.Sub(oldest).Seconds(), 0)
				}
				ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(n))
				ch <- prometheus.MustNewConstMetric(descPendingOldest, prometheus.GaugeValue, age)
				return
			}
			n++
			if oldest.IsZero() || e.Created().Before(oldest) {
				oldest = e.Created()
			}
		}
	}
}

// ObserveHandler serves /metrics, /healthz (the process is alive: always
// 200) and /readyz (200 when ready says nil, else 503 with the reasons).
func ObserveHandler(ready func(ctx context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"alive": true})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"ready": false, "reasons": strings.Split(err.Error(), "\n")})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": true})
	})
	return mux
}

// ServeObserve listens on addr and serves ObserveHandler until ctx ends.
// It returns the address it listens on.
func ServeObserve(ctx context.Context, addr string, ready func(ctx context.Context) error, log Log) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: ObserveHandler(ready), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics listener")
		}
	}()
	log.Info().Str("metrics", ln.Addr().String()).Msg("metrics, /healthz and /readyz listening")
	return ln.Addr().String(), nil
}
