package auditor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An Auditor starts once: a second Start, or one after Stop, is refused
// and leaves the running auditor as it was (one consumer, one chain).
func TestStartOnce(t *testing.T) {
	e := setup(t)
	a := e.start(Options{Key: newKey(t), Interval: time.Hour})
	require.ErrorIs(t, a.Start(t.Context()), ErrStarted)
	e.publish(3)
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 3 }, 10*time.Second, 10*time.Millisecond, "still reading")
	a.Stop()
	require.Len(t, e.checkpoints(), 1, "one shutdown checkpoint: one chain")
	require.ErrorIs(t, a.Start(t.Context()), ErrStarted, "a stopped auditor is replaced, not restarted")
}
