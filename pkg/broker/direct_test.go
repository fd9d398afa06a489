package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// readAll collects what ReadDirect reads.
func readAll(t *testing.T, nc *nats.Conn, r broker.DirectRead) []broker.StoredMsg {
	t.Helper()
	var out []broker.StoredMsg
	require.NoError(t, broker.ReadDirect(t.Context(), nc, broker.AuditStream, r, func(m broker.StoredMsg) error {
		out = append(out, m)
		return nil
	}))
	return out
}

func TestReadDirect(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()

	require.Empty(t, readAll(t, env.NC, broker.DirectRead{}), "an empty stream reads as nothing")

	pub := broker.NewPublisher(env.JS, "test")
	const n = 25
	for i := range n {
		agent := "a" + fmt.Sprint(i%3)
		_, _, err := pub.Emit(ctx, fmt.Sprintf("ev-%d", i), events.TypeGuardrailFired, agent,
			events.GuardrailFired{Agent: agent, Rule: "r", FiredAt: time.Now()})
		require.NoError(t, err)
	}
	want := env.AuditEvents(t, ">")
	require.Len(t, want, n)

	t.Run("everything in small batches, as stored", func(t *testing.T) {
		got := readAll(t, env.NC, broker.DirectRead{Batch: 4})
		require.Len(t, got, n)
		for i, m := range got {
			require.Equal(t, want[i].Sequence, m.Seq)
			require.Equal(t, want[i].Subject, m.Subject)
			require.Equal(t, want[i].Data, m.Data)
			require.True(t, want[i].Time.Equal(m.Time), "stored time")
			// Exactly the publisher's headers (GetMsg's answer adds the
			// direct get response headers; ReadDirect removes them).
			wantH := nats.Header{}
			for k, v := range want[i].Header {
				if k != "Nats-Stream" && k != "Nats-Subject" && k != "Nats-Sequence" && k != "Nats-Time-Stamp" {
					wantH[k] = v
				}
			}
			require.Equal(t, wantH, m.Header)
			require.Equal(t, "ev-"+fmt.Sprint(i), m.Header.Get("Nats-Msg-Id"))
			require.Empty(t, m.Header.Get("Nats-Sequence"))
		}
	})

	t.Run("filter", func(t *testing.T) {
		got := readAll(t, env.NC, broker.DirectRead{Filter: "*.*.a1", Batch: 3})
		require.Len(t, got, 8)
		for _, m := range got {
			require.Equal(t, "guardrail.fired.a1", m.Subject)
		}
	})

	t.Run("from a sequence up to a sequence", func(t *testing.T) {
		got := readAll(t, env.NC, broker.DirectRead{FromSeq: 10, UpToSeq: 12})
		require.Len(t, got, 3)
		require.Equal(t, uint64(10), got[0].Seq)
		require.Equal(t, uint64(12), got[2].Seq)
	})

	t.Run("since a stored time", func(t *testing.T) {
		got := readAll(t, env.NC, broker.DirectRead{Since: want[20].Time})
		require.Len(t, got, 5)
		require.Equal(t, want[20].Sequence, got[0].Seq)
	})

	t.Run("skips deleted messages", func(t *testing.T) {
		// The audit stream denies deletes: a stream of the test's own.
		st, err := env.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "HOLES", Subjects: []string{"holes.>"}, AllowDirect: true})
		require.NoError(t, err)
		for i := range 8 {
			_, err := env.JS.Publish(ctx, fmt.Sprintf("holes.%d", i), []byte("x"))
			require.NoError(t, err)
		}
		require.NoError(t, st.DeleteMsg(ctx, 5))
		var got []broker.StoredMsg
		require.NoError(t, broker.ReadDirect(ctx, env.NC, "HOLES", broker.DirectRead{Batch: 2}, func(m broker.StoredMsg) error {
			got = append(got, m)
			return nil
		}))
		require.Len(t, got, 7)
		require.Equal(t, uint64(4), got[3].Seq)
		require.Equal(t, uint64(6), got[4].Seq)
	})

	t.Run("ends at the last message when it started", func(t *testing.T) {
		var got int
		err := broker.ReadDirect(ctx, env.NC, broker.AuditStream, broker.DirectRead{Batch: 5}, func(m broker.StoredMsg) error {
			got++
			// Publish while reading: the read still ends.
			_, _, err := pub.Emit(ctx, events.NewID("late"), events.TypeGuardrailFired, "a9",
				events.GuardrailFired{Agent: "a9", Rule: "r", FiredAt: time.Now()})
			return err
		})
		require.NoError(t, err)
		require.Equal(t, n, got)
	})

	t.Run("last message", func(t *testing.T) {
		m, ok, err := broker.DirectGetLast(ctx, env.NC, broker.AuditStream, "guardrail.fired.a0")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "guardrail.fired.a0", m.Subject)
		_, ok, err = broker.DirectGetLast(ctx, env.NC, broker.AuditStream, "jit.nothing.here")
		require.NoError(t, err)
		require.False(t, ok)
	})

	t.Run("a consumer is never created", func(t *testing.T) {
		st, err := env.JS.Stream(ctx, broker.AuditStream)
		require.NoError(t, err)
		names := st.ConsumerNames(ctx)
		for n := range names.Name() {
			t.Fatalf("consumer %s exists", n)
		}
		require.NoError(t, names.Err())
	})
}

// TestReadDirectOnStreamWithoutDirect: a stream that does not allow direct
// access answers no one; the reader says so instead of hanging.
func TestReadDirectWithoutDirectAccess(t *testing.T) {
	env := natstest.Setup(t)
	_, err := env.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: "NODIRECT", Subjects: []string{"nodirect.>"}})
	require.NoError(t, err)
	_, err = env.JS.Publish(t.Context(), "nodirect.x", []byte("x"))
	require.NoError(t, err)
	err = broker.ReadDirect(t.Context(), env.NC, "NODIRECT", broker.DirectRead{Wait: 500 * time.Millisecond}, func(broker.StoredMsg) error { return nil })
	require.Error(t, err)
}
