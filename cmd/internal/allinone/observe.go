package allinone

import (
	"context"
	"errors"
	"net/http"

	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
	"github.com/agentjit/jit/services/approval/notify"
)

// observe provides the process-wide gauges (configuration, suspensions,
// pending approvals) and the approval service's notification counters to
// /metrics; the services provide their own as they start.
func (a *App) observe(d service.Deps, appr *approval.Service) func() {
	gauges := service.ProvideGauges(d, true)
	notifications := notify.ProvideMetrics(appr.Counters())
	return func() { gauges(); notifications() }
}

// observeRoutes adds GET /metrics (every jit_* series of the five services,
// the notification counters the console's /metrics always had among them)
// and GET /readyz to jitd's HTTP listener. /healthz stays as it was.
func (a *App) observeRoutes(mux *http.ServeMux, d service.Deps) {
	mux.Handle("GET /metrics", metrics.Handler())
	ready := service.ObserveHandler(func(ctx context.Context) error {
		if a.server == nil || !a.server.JetStreamEnabled() {
			return errors.New("JetStream is not running")
		}
		// Every consumer of the process (name ""), the connection and the
		// configuration.
		return service.Ready(ctx, "", d)
	})
	mux.Handle("GET /readyz", ready)
}
