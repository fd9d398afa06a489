// Command approval runs the approval service against the NATS server named
// by NATS_URL. JIT_HTTP_LISTEN (host:port), if set, serves the approver
// console and the HTTP JSON API there.
package main

import (
	"os"

	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
)

func main() {
	var opts []approval.Option
	if addr := os.Getenv("JIT_HTTP_LISTEN"); addr != "" {
		opts = append(opts, approval.WithHTTP(addr))
	}
	service.Main("approval", func(d service.Deps) service.Service {
		s := approval.New(d, opts...)
		// For --metrics-listen; the process ends with the service.
		approval.ProvideNotificationMetrics(s.Counters())
		return s
	}, service.WithSecrets())
}
