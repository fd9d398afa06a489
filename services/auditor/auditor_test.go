package auditor

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

type env struct {
	*natstest.Env
	t   *testing.T
	pub *broker.Publisher
	n   int
}

func setup(t *testing.T) *env {
	e := natstest.Setup(t)
	return &env{Env: e, t: t, pub: broker.NewPublisher(e.JS, "test")}
}

func (e *env) deps() service.Deps {
	return service.Deps{NC: e.NC, JS: e.JS, Buckets: e.Buckets, Log: e.Log}
}

// publish stores n guardrail events.
// publish stores n events and returns the stream sequence of the last.
func (e *env) publish(n int) (last uint64) {
	e.t.Helper()
	for range n {
		e.n++
		agent := fmt.Sprintf("a%d", e.n%4)
		_, seq, err := e.pub.Emit(e.t.Context(), fmt.Sprintf("ev-%d", e.n), events.TypeGuardrailFired, agent,
			events.GuardrailFired{Agent: agent, Rule: "r", FiredAt: time.Now()})
		require.NoError(e.t, err)
		last = seq
	}
	return last
}

func (e *env) start(o Options) *Auditor {
	e.t.Helper()
	a := New(e.deps(), o)
	require.NoError(e.t, a.Start(e.t.Context()))
	e.t.Cleanup(a.Stop)
	return a
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}

// records reads the whole stream as verify does.
func (e *env) records() []audit.Record {
	e.t.Helper()
	var out []audit.Record
	require.NoError(e.t, broker.ReadDirect(e.t.Context(), e.NC, broker.AuditStream, broker.DirectRead{}, func(m broker.StoredMsg) error {
		out = append(out, audit.Record{Seq: m.Seq, Time: m.Time, Subject: m.Subject, Header: m.Header, Body: m.Data})
		return nil
	}))
	return out
}

func (e *env) verify(keys ...ed25519.PublicKey) audit.Result {
	v := audit.NewVerifier(audit.NewKeys(keys...))
	for _, r := range e.records() {
		v.Add(r)
	}
	return v.Result()
}

// checkpoints returns the checkpoints on the stream, in order.
func (e *env) checkpoints() []events.Checkpoint {
	e.t.Helper()
	var out []events.Checkpoint
	for _, m := range e.AuditEvents(e.t, audit.CheckpointSubject) {
		ev, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(e.t, err)
		c, err := events.DataAs[events.Checkpoint](ev)
		require.NoError(e.t, err)
		out = append(out, c)
	}
	return out
}

func lastSeq(t *testing.T, js jetstream.JetStream) uint64 {
	st, err := js.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	return info.State.LastSeq
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// TestCheckpointsAtTheInterval: events are covered by a checkpoint within
// the interval, the checkpoint's own message by the next one when more
// events came, and the whole stream verifies.
func TestCheckpointsAtTheInterval(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	e.start(Options{Key: key, Interval: 50 * time.Millisecond})
	// How the publishes fall against the interval decides how many
	// checkpoints cover them: what is asserted is that checkpoints come
	// without a stop, cover the stream in order without a gap, and verify.
	covered := func(seq uint64) []events.Checkpoint {
		var cps []events.Checkpoint
		require.Eventually(t, func() bool {
			cps = e.checkpoints()
			return len(cps) > 0 && cps[len(cps)-1].LastSeq >= seq
		}, 10*time.Second, 20*time.Millisecond, "a checkpoint covering seq %d", seq)
		require.Equal(t, uint64(1), cps[0].FirstSeq)
		require.Equal(t, audit.Hash{}, must(audit.Check(cps[0])).Prev, "a new chain starts at zero")
		for i, c := range cps {
			require.Equal(t, audit.KeyID(pub(key)), c.KeyID)
			require.Equal(t, int(c.LastSeq-c.FirstSeq+1), c.Count)
			if i > 0 {
				require.Equal(t, cps[i-1].LastSeq+1, c.FirstSeq, "each checkpoint starts where the last ended (with the last checkpoint itself)")
			}
		}
		return cps
	}
	e.publish(5)
	first := covered(5)
	e.publish(3)
	// The 3 events came after the last checkpoint so far.
	last := first[len(first)-1].LastSeq + 1 + 3
	cps := covered(last)
	require.Greater(t, len(cps), len(first))
	require.Eventually(t, func() bool {
		res := e.verify(pub(key))
		return res.OK() && res.Checkpoints == len(e.checkpoints()) && res.Uncovered == 1
	}, 10*time.Second, 20*time.Millisecond, "the trail verifies, all but the last checkpoint covered")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestResumesAfterStop: Stop publishes a last checkpoint; a new auditor
// continues the same chain from it.
func TestResumesAfterStop(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	a := e.start(Options{Key: key, Interval: time.Hour})
	e.publish(4)
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 4 }, 10*time.Second, 10*time.Millisecond)
	a.Stop()
	cps := e.checkpoints()
	require.Len(t, cps, 1, "the shutdown checkpoint")
	require.Equal(t, uint64(4), cps[0].LastSeq)

	e.publish(3)
	a2 := e.start(Options{Key: key, Interval: time.Hour})
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 8 }, 10*time.Second, 10*time.Millisecond)
	a2.Stop()
	cps = e.checkpoints()
	require.Len(t, cps, 2)
	require.Equal(t, uint64(5), cps[1].FirstSeq, "resumed after the checkpoint's range")
	require.Equal(t, cps[0].Chain, cps[1].PrevChain, "the same chain goes on")
	res := e.verify(pub(key))
	require.True(t, res.OK(), "%+v", res.Findings)

	// Stopped again with nothing new but its own checkpoint: nothing published.
	a3 := e.start(Options{Key: key, Interval: time.Hour})
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 9 }, 10*time.Second, 10*time.Millisecond)
	a3.Stop()
	require.Len(t, e.checkpoints(), 2)
}

func deliveredTo(t *testing.T, e *env, durable string) uint64 {
	c, err := e.JS.Consumer(t.Context(), broker.AuditStream, durable)
	if err != nil {
		return 0
	}
	info, err := c.Info(t.Context())
	if err != nil {
		return 0
	}
	return info.Delivered.Stream
}

// TestResumesWhenTheConsumerRanAhead is the state a SIGKILL leaves: the
// consumer delivered messages that no checkpoint covers. The auditor
// repositions it at its last checkpoint and chains them.
func TestResumesWhenTheConsumerRanAhead(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	a := e.start(Options{Key: key, Interval: time.Hour})
	e.publish(3)
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 3 }, 10*time.Second, 10*time.Millisecond)
	a.Stop()
	e.publish(5)
	// A crashed auditor had these delivered and never acknowledged.
	cons, err := e.JS.Consumer(t.Context(), broker.AuditStream, DefaultDurable)
	require.NoError(t, err)
	batch, err := cons.Fetch(6, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	got := 0
	for range batch.Messages() {
		got++
	}
	require.Equal(t, 6, got)
	require.Equal(t, uint64(9), deliveredTo(t, e, DefaultDurable))

	a2 := e.start(Options{Key: key, Interval: time.Hour})
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) == 9 }, 10*time.Second, 10*time.Millisecond)
	a2.Stop()
	cps := e.checkpoints()
	require.Len(t, cps, 2)
	require.Equal(t, uint64(4), cps[1].FirstSeq)
	require.Equal(t, uint64(9), cps[1].LastSeq)
	require.Empty(t, cps[1].Skipped)
	res := e.verify(pub(key))
	require.True(t, res.OK(), "%+v", res.Findings)
}

// TestManyMessagesMakeSeveralCheckpoints: no checkpoint covers more than
// MaxCheckpointEvents messages.
func TestManyMessagesMakeSeveralCheckpoints(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	a := e.start(Options{Key: key, Interval: time.Hour})
	e.publish(2*events.MaxCheckpointEvents + 10)
	require.Eventually(t, func() bool { return len(e.checkpoints()) == 2 }, 30*time.Second, 20*time.Millisecond,
		"a checkpoint as soon as 1,024 messages wait")
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= lastSeq(t, e.JS) }, 30*time.Second, 20*time.Millisecond)
	a.Stop()
	cps := e.checkpoints()
	require.Len(t, cps, 3)
	for _, c := range cps {
		require.LessOrEqual(t, c.Count, events.MaxCheckpointEvents)
	}
	res := e.verify(pub(key))
	require.True(t, res.OK(), "%+v", res.Findings)
	require.Equal(t, res.Records-1, res.Verified)
}

// TestHoleBeforeTheAuditorRead: messages gone before the auditor read them
// are recorded as skipped, and what is there verifies. Nobody may delete
// one message of the audit stream (deny_delete); its limits can drop the
// oldest, as here.
func TestHoleBeforeTheAuditorRead(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	e.publish(5)
	st, err := e.JS.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	require.ErrorContains(t, st.DeleteMsg(t.Context(), 3), "not permitted", "the audit stream denies deletes")
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 2
	_, err = e.JS.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
	cfg.MaxMsgs = -1
	_, err = e.JS.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
	a := e.start(Options{Key: key, Interval: time.Hour})
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 5 }, 10*time.Second, 10*time.Millisecond)
	a.Stop()
	cps := e.checkpoints()
	require.Len(t, cps, 1)
	// The chain starts where the stream now starts.
	require.Empty(t, cps[0].Skipped)
	require.Equal(t, uint64(4), cps[0].FirstSeq)
	require.Equal(t, 2, cps[0].Count)
	require.True(t, e.verify(pub(key)).OK())
}

// TestKeyRotation: after a restart with a new key, whose directory holds
// the old public key, the chain goes on; verify needs both keys.
func TestKeyRotation(t *testing.T) {
	e := setup(t)
	dir := filepath.Join(t.TempDir(), "keys")
	keyFile := filepath.Join(dir, "audit-ed25519.key")
	a := e.start(Options{KeyFile: keyFile, Interval: time.Hour})
	oldPub := a.PublicKey()
	e.publish(3)
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 3 }, 10*time.Second, 10*time.Millisecond)
	a.Stop()
	pubFile, err := os.ReadFile(filepath.Join(dir, "audit-ed25519.pub"))
	require.NoError(t, err)

	// The documented rotation: keep the old public key under another name,
	// remove the old private key; the next start makes a new key.
	require.NoError(t, os.Rename(filepath.Join(dir, "audit-ed25519.pub"), filepath.Join(dir, "audit-ed25519-2026-11.pub")))
	require.NoError(t, os.Remove(keyFile))
	e.publish(2)
	a2 := e.start(Options{KeyFile: keyFile, Interval: time.Hour})
	require.False(t, oldPub.Equal(a2.PublicKey()), "a new key")
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 6 }, 10*time.Second, 10*time.Millisecond)
	a2.Stop()
	cps := e.checkpoints()
	require.Len(t, cps, 2)
	require.Equal(t, cps[0].Chain, cps[1].PrevChain, "the new key continues the old key's chain")
	require.NotEqual(t, cps[0].KeyID, cps[1].KeyID)

	old, err := audit.ParsePublicKey(pubFile)
	require.NoError(t, err)
	res := e.verify(old, a2.PublicKey())
	require.True(t, res.OK(), "%+v", res.Findings)
	require.Len(t, res.KeyIDs, 2)
	res = e.verify(a2.PublicKey())
	require.False(t, res.OK(), "the old checkpoints need the old key")
	require.Equal(t, audit.Unverifiable, res.Findings[0].Kind)
}

// TestRepublishedCheckpointIsStoredOnce: a checkpoint signed and published
// again (a retry, a replica with the same key over the same range) is the
// same event and the stream stores it once.
func TestRepublishedCheckpointIsStoredOnce(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	e.publish(2)
	recs := e.records()
	emit := func() uint64 {
		c := audit.NewChain(broker.AuditStream, 1, audit.Hash{})
		for _, r := range recs {
			require.NoError(t, c.Add(r.Seq, r.Hash(), r.Time, false))
		}
		cp, _ := c.Peek()
		audit.Sign(&cp, key)
		_, seq, err := broker.NewPublisher(e.JS, Name).Emit(t.Context(), audit.CheckpointEventID(cp.Stream, cp.FirstSeq, cp.LastSeq),
			events.TypeCheckpoint, "", cp, events.WithTime(cp.CoveredUntil))
		require.NoError(t, err)
		return seq
	}
	require.Equal(t, emit(), emit())
	require.Len(t, e.checkpoints(), 1)

	// And an auditor that starts now resumes from it.
	a := e.start(Options{Key: key, Interval: time.Hour})
	e.publish(1)
	require.Eventually(t, func() bool { return deliveredTo(t, e, DefaultDurable) >= 4 }, 10*time.Second, 10*time.Millisecond)
	a.Stop()
	cps := e.checkpoints()
	require.Len(t, cps, 2)
	require.Equal(t, uint64(3), cps[1].FirstSeq)
	require.True(t, e.verify(pub(key)).OK())
}

// TestConsumerDeletedFromUnderTheAuditor: the auditor's durable consumer,
// deleted while it runs, is made again (after its last ack floor: the last
// checkpoint the broker saw acknowledged) and the chain goes on: the events
// stored after the deletion are covered, every message exactly once, and
// the trail verifies.
func TestConsumerDeletedFromUnderTheAuditor(t *testing.T) {
	e := setup(t)
	key := newKey(t)
	e.start(Options{Key: key, Interval: 50 * time.Millisecond})
	coveredThrough := func() uint64 {
		cps := e.checkpoints()
		if len(cps) == 0 {
			return 0
		}
		return cps[len(cps)-1].LastSeq
	}
	e.publish(4)
	require.Eventually(t, func() bool { return coveredThrough() >= 4 }, 10*time.Second, 10*time.Millisecond)
	before := testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(DefaultDurable))

	require.NoError(t, e.JS.DeleteConsumer(t.Context(), broker.AuditStream, DefaultDurable))
	e.publish(3)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(DefaultDurable)) == before+1
	}, 10*time.Second, 10*time.Millisecond, "made again")
	// The last events, and the checkpoints between them, are covered (not
	// the stream's last message, which may be a checkpoint: that one is
	// covered only once more events come).
	last := e.publish(2)
	require.Eventually(t, func() bool { return coveredThrough() >= last }, 10*time.Second, 10*time.Millisecond)
	cps := e.checkpoints()
	require.Equal(t, uint64(1), cps[0].FirstSeq)
	for i, c := range cps {
		require.Empty(t, c.Skipped)
		if i > 0 {
			require.Equal(t, cps[i-1].LastSeq+1, c.FirstSeq, "every message chained once, in order")
			require.Equal(t, cps[i-1].Chain, c.PrevChain, "one chain")
		}
	}
	res := e.verify(pub(key))
	require.True(t, res.OK(), "%+v", res.Findings)
	_, err := e.JS.Consumer(t.Context(), broker.AuditStream, DefaultDurable)
	require.NoError(t, err)
}
