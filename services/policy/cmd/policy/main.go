// Command policy runs the policy service: it decides every jit.requested
// event and publishes jit.decided.
package main

import (
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/policy"
)

func main() {
	service.Main("policy", func(d service.Deps) service.Service { return policy.New(d) })
}
