package approval

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A Service starts once: a second Start, or one after Stop, is refused and
// leaves the running service as it was.
func TestStartOnce(t *testing.T) {
	h := newHarness(t)
	s := h.start()
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted)
	h.barrier() // still granting
	s.Stop()
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted, "a stopped service is replaced, not restarted")
}
