package revoker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder collects the keys of the jobs that ran, in order.
type recorder struct {
	mu   sync.Mutex
	keys []string
}

func (r *recorder) job(key string) job {
	return job{key: key, run: func(context.Context) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.keys = append(r.keys, key)
		return nil
	}}
}

func (r *recorder) ran() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.keys...)
}

func runScheduler(t *testing.T) *scheduler {
	s := newScheduler(time.Now)
	s.start(1, func(j job) { _ = j.run(context.Background()) })
	t.Cleanup(s.stop)
	return s
}

func TestSchedulerOrder(t *testing.T) {
	t.Parallel()
	s := runScheduler(t)
	var r recorder
	now := time.Now()
	s.schedule(now.Add(60*time.Millisecond), r.job("c"))
	s.schedule(now.Add(20*time.Millisecond), r.job("a"))
	s.schedule(now.Add(40*time.Millisecond), r.job("b"))
	s.schedule(now.Add(-time.Second), r.job("past"))
	require.Eventually(t, func() bool { return len(r.ran()) == 4 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"past", "a", "b", "c"}, r.ran())
	assert.Zero(t, s.pending())
}

func TestSchedulerOneTimerPerKey(t *testing.T) {
	t.Parallel()
	s := runScheduler(t)
	var r recorder
	now := time.Now()
	s.schedule(now.Add(time.Hour), r.job("k"))
	s.schedule(now.Add(30*time.Millisecond), r.job("k")) // earlier: moves it
	s.schedule(now.Add(2*time.Hour), r.job("k"))         // later: ignored
	s.schedule(now.Add(time.Hour), r.job("gone"))
	s.cancel("gone")
	assert.Equal(t, 1, s.pending())
	require.Eventually(t, func() bool { return len(r.ran()) == 1 }, 5*time.Second, 5*time.Millisecond)
	s.enqueue(r.job("now"))
	require.Eventually(t, func() bool { return len(r.ran()) == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"k", "now"}, r.ran())
	assert.Zero(t, s.pending())
}

func TestSchedulerStopWaitsForRunningJob(t *testing.T) {
	t.Parallel()
	s := newScheduler(time.Now)
	started, release := make(chan struct{}), make(chan struct{})
	var finished bool
	s.start(2, func(j job) { _ = j.run(context.Background()) })
	s.enqueue(job{key: "slow", run: func(context.Context) error {
		close(started)
		<-release
		finished = true
		return nil
	}})
	<-started
	stopped := make(chan struct{})
	go func() { s.stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while a job was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-stopped
	assert.True(t, finished)
	s.enqueue(job{key: "late", run: func(context.Context) error { t.Error("ran after stop"); return nil }})
}

func FuzzGuardrailOf(f *testing.F) {
	f.Add("guardrail.fired.market-intel", `{"agent":"market-intel","rule":"price-floor","fired_at":"2026-01-01T00:00:00Z"}`)
	f.Add("guardrail.fired.a", `{"agent":"b","rule":"r"}`)
	f.Add("guardrail.fired.a", `{"agent":"a","rule":""}`)
	f.Add("guardrail.fired.a.b", `{"agent":"a.b","rule":"r"}`)
	f.Add("guardrail.fired._unknown", `null`)
	f.Fuzz(func(t *testing.T, subject, data string) {
		e, err := events.New("grd_1", events.TypeGuardrailFired, "fuzz", "", rawJSON(data))
		if err != nil {
			return
		}
		g, err := broker.DataFor[events.GuardrailFired](e, events.TypeGuardrailFired, subject)
		if err != nil {
			return
		}
		// Whatever passes names a valid agent that is the subject's last token.
		if !events.ValidID(g.Agent) || subject != events.TypeGuardrailFired+"."+g.Agent || g.Rule == "" {
			t.Fatalf("accepted %q on %q as %+v", data, subject, g)
		}
	})
}

// rawJSON is data that encodes as itself.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }
