module github.com/agentjit/jit/services/policy

go 1.26.8

require (
	github.com/agentjit/jit/pkg v0.0.0
	github.com/agentjit/jit/pkg/events v0.0.0
)

replace (
	github.com/agentjit/jit/pkg => ../../pkg
	github.com/agentjit/jit/pkg/events => ../../pkg/events
)
