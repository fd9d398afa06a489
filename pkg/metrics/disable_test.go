package metrics

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestDisableStopsTheRequestPath: once disabled, a stored event and an
// announced grant move no series.
func TestDisableStopsTheRequestPath(t *testing.T) {
	e, err := events.New("req_disable", events.TypeRequested, "requester", "a1",
		events.Request{RequestID: "req_disable", Agent: "a1"}, events.WithRequestID("req_disable"))
	require.NoError(t, err)
	published := func() float64 { return testutil.ToFloat64(Published.WithLabelValues(events.TypeRequested)) }
	granted := func() int { return testutil.CollectAndCount(RequestToGrant) }

	before := published()
	Observe(e)
	require.Equal(t, before+1, published(), "counted while enabled")
	require.True(t, Enabled())

	off.Store(true)
	t.Cleanup(func() { off.Store(false) })
	require.False(t, Enabled())
	before, series := published(), granted()
	Observe(e)
	GrantAnnounced("disabled-mode", time.Now().Add(-time.Millisecond), time.Now())
	require.Equal(t, before, published(), "not counted once disabled")
	require.Equal(t, series, granted(), "no grant latency once disabled")
}
