// Command approval runs the approval service against the NATS server named
// by NATS_URL. JIT_HTTP_LISTEN (host:port), if set, serves the approver
// console and the HTTP JSON API there.
package main

import (
	"os"

	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
	"github.com/agentjit/jit/services/approval/notify"
	"github.com/agentjit/jit/services/approval/web"
)

func main() {
	addr := os.Getenv("JIT_HTTP_LISTEN")
	service.Main("approval", func(d service.Deps) service.Service {
		s := approval.New(d)
		// For --metrics-listen; the process ends with the service.
		notify.ProvideMetrics(s.Counters())
		if addr != "" {
			return web.Serve(s, d, addr)
		}
		return s
	}, service.WithSecrets())
}
