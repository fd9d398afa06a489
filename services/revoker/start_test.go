package revoker_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/services/revoker"
	"github.com/stretchr/testify/require"
)

// A Service starts once: a second Start, or one after Stop, is refused and
// leaves the running service as it was.
func TestStartOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s := f.start(t)
	require.ErrorIs(t, s.Start(ctx(t)), revoker.ErrStarted)
	_, g := f.grant(t, agentA, time.Second)
	require.Eventually(t, func() bool { return len(revocationsOf(t, f, g.GrantID)) == 1 }, waitFor, tick, "still revoking")
	s.Stop()
	require.ErrorIs(t, s.Start(ctx(t)), revoker.ErrStarted, "a stopped service is replaced, not restarted")
}
