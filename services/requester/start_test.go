package requester

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A Service starts once: a second Start, or one after Stop, is refused and
// leaves the running service as it was.
func TestStartOnce(t *testing.T) {
	env, _, s := setup(t)
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted)
	_, err := call(t, env.NC, valid())
	require.NoError(t, err, "still answering")
	s.Stop()
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted, "a stopped service is replaced, not restarted")
}
