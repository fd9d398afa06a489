package metrics

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// TestPayloadAndDecodedCountAlike: reading the labels from the payload an
// event was built from (value or pointer) moves exactly the series that
// decoding the event's data moves, for every type measured.
func TestPayloadAndDecodedCountAlike(t *testing.T) {
	now := time.Now()
	cases := []struct {
		typ  string
		data any
		// series is the one the type's labels select.
		series prometheus.Collector
		hist   prometheus.Collector
	}{
		{events.TypeDecided, events.Decision{Outcome: "approved", Mode: events.ModeAutoApprove, DecidedAt: now,
			Request: events.Request{RequestedAt: now.Add(-3 * time.Millisecond)}},
			Requests.WithLabelValues("approved", events.ModeAutoApprove), DecisionLatency},
		{events.TypeGranted, &events.Grant{Mode: "payload-test"}, Grants.WithLabelValues("payload-test"), nil},
		{events.TypeRevoked, events.Revocation{Agent: "a1", Reason: events.RevokedExpired, RevokedAt: now, ExpiresAt: now.Add(-time.Millisecond)},
			Revocations.WithLabelValues(events.RevokedExpired), RevocationLag},
		{events.TypeGuardrailFired, events.GuardrailFired{Agent: "a1", Rule: "payload-rule"}, GuardrailsFired.WithLabelValues("payload-rule"), nil},
		{events.TypeRejected, &events.Rejection{Stage: events.StageRequest, Code: "payload_code"},
			Rejected.WithLabelValues(events.StageRequest, "payload_code"), nil},
	}
	for _, c := range cases {
		t.Run(c.typ, func(t *testing.T) {
			e, err := events.New("evt_payload", c.typ, "test", "a1", c.data)
			require.NoError(t, err)
			count := func() float64 { return testutil.ToFloat64(c.series) }
			samples := func() uint64 {
				if c.hist == nil {
					return 0
				}
				return sampleCount(t, c.hist)
			}

			before, hb := count(), samples()
			Observe(e)
			require.Equal(t, before+1, count(), "decoded")
			decodedSamples := samples() - hb

			before, hb = count(), samples()
			ObservePayload(e, c.data)
			require.Equal(t, before+1, count(), "from the payload")
			require.Equal(t, decodedSamples, samples()-hb, "the same histogram samples")
			if c.hist != nil {
				require.EqualValues(t, 1, decodedSamples, "a latency observed")
			}
		})
	}
}

func sampleCount(t *testing.T, c prometheus.Collector) uint64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	var n uint64
	for m := range ch {
		var pb dto.Metric
		require.NoError(t, m.Write(&pb))
		if h := pb.GetHistogram(); h != nil {
			n += h.GetSampleCount()
		}
	}
	return n
}
