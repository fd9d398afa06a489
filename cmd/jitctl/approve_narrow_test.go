package main

import (
	"testing"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/stretchr/testify/require"
)

func TestApproveNarrowingFlags(t *testing.T) {
	h := newHarness(t)
	h.vars["JIT_TOKEN"] = "dev-alice"
	h.serve(broker.APIApprove, func(c call) (any, error) {
		var in broker.ApproveInput
		if err := broker.DecodeInput(c.body, &in); err != nil {
			return nil, err
		}
		return broker.ActionResult{RequestID: in.RequestID, Outcome: "approved"}, nil
	})
	r := h.run("approve", "req_p", "--perm", "integrations:read", "--perm", "data:read", "--duration", "5m", "--comment", "less")
	require.Equal(t, exitOK, r.code, r.stderr)
	var in broker.ApproveInput
	require.NoError(t, broker.DecodeInput(h.nextCall(t).body, &in))
	require.Equal(t, broker.ApproveInput{RequestID: "req_p", Comment: "less",
		Permissions: []string{"integrations:read", "data:read"}, Duration: "5m"}, in)

	r = h.run("deny", "req_p", "--comment", "no", "--duration", "5m")
	require.Equal(t, exitError, r.code, "deny takes no narrowing flags")
}
