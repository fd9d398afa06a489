// Command revoker runs the JIT revoker service against the NATS server at
// NATS_URL: it ends every grant (expiry, completion, guardrail) exactly once
// and manages suspensions.
package main

import (
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/revoker"
)

func main() {
	service.Main("revoker", func(d service.Deps) service.Service { return revoker.New(d) })
}
