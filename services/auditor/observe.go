package auditor

import (
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
)

// observe makes the auditor visible (issue 12): its durable consumer in the
// jit_consumer_* series, and a micro service (it serves no API) so that
// `jitctl status` lists it with that consumer's backlog. A service that
// cannot be announced is logged: the auditor's work does not depend on it.
func (a *Auditor) observe(cons jetstream.Consumer) {
	a.unwatch = metrics.WatchConsumer(a.d.JS, cons, broker.AuditStream, a.o.Durable, nil)
	svc, err := service.StatusService(a.d, Name, "signs checkpoints of the audit trail")
	if err != nil {
		a.log.Warn().Err(err).Msg("not announced on the services API: jitctl status will not list the auditor")
		return
	}
	a.status = svc
}

// unobserve ends what observe started.
func (a *Auditor) unobserve() {
	if a.status != nil {
		_ = a.status.Stop()
	}
	if a.unwatch != nil {
		a.unwatch()
	}
}
