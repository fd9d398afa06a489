package policy

import (
	"context"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// A Service starts once: a second Start, or one after Stop, is refused and
// leaves the running service as it was.
func TestStartOnce(t *testing.T) {
	env := natstest.Setup(t)
	s := startPolicy(t, env, env.ApplyConfig(t, exampleYAML(t)))
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted)
	publishRequest(t, env, "req-once", "market-intel", 30*time.Minute, "data:write")
	require.Equal(t, events.OutcomeApproved, waitDecisions(t, env, 1)["req-once/policy"].decision.Outcome, "still deciding")
	s.Stop()
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted, "a stopped service is replaced, not restarted")
}
