module github.com/agentjit/jit/cmd

go 1.26.8

require (
	github.com/agentjit/jit/pkg v0.0.0
	github.com/agentjit/jit/pkg/events v0.0.0
	github.com/agentjit/jit/services/approval v0.0.0
	github.com/agentjit/jit/services/policy v0.0.0
	github.com/agentjit/jit/services/requester v0.0.0
	github.com/agentjit/jit/services/revoker v0.0.0
)

replace (
	github.com/agentjit/jit/pkg => ../pkg
	github.com/agentjit/jit/pkg/events => ../pkg/events
	github.com/agentjit/jit/services/approval => ../services/approval
	github.com/agentjit/jit/services/policy => ../services/policy
	github.com/agentjit/jit/services/requester => ../services/requester
	github.com/agentjit/jit/services/revoker => ../services/revoker
)
