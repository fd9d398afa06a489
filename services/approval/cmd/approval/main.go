// Command approval runs the approval service against the NATS server named
// by NATS_URL.
package main

import (
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
)

func main() {
	service.Main("approval", func(d service.Deps) service.Service { return approval.New(d) })
}
