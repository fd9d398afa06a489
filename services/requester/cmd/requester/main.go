// Command requester runs the jit-requester service: the agent-facing edge
// that validates requests and publishes them as jit.requested.
package main

import (
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/requester"
)

func main() {
	service.Main("requester", func(d service.Deps) service.Service { return requester.New(d) })
}
