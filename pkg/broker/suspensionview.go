package broker

import (
	"context"
	"fmt"
	"sync"

	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// SuspensionView keeps in memory which agents have a record in the
// suspensions bucket, fed by a KV watch, so that the checks at the edge of
// the pipeline (the requester's refusal, the policy's decision) need no
// broker round trip for an agent that is not suspended.
//
// It answers "not suspended" from memory only while its watch runs and has
// delivered the whole bucket. Every other answer reads the bucket: a record
// the view holds is confirmed (and its details read) there, so a
// reinstatement is seen at once, and a view that is not live falls back to
// reading. A suspension stored an instant ago may not be in the view yet;
// that is why the services that act on a request (the approval service
// before it grants, the revoker for every new grant) read the bucket
// itself, and why the checker refuses a suspended agent on its own view.
type SuspensionView struct {
	kv  jetstream.KeyValue
	log zerolog.Logger

	mu     sync.RWMutex
	agents map[string]struct{}
	live   bool
}

// WatchSuspensions starts a view of kv (the suspensions bucket) and returns
// once it holds the whole bucket. It follows the bucket until ctx ends
// (WatchBucket): while its watch is not running, every answer reads the
// bucket (fail closed), and it watches again with a backoff.
func WatchSuspensions(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger) (*SuspensionView, error) {
	v := &SuspensionView{kv: kv, log: log}
	var initial map[string]struct{}
	set := func(m map[string]struct{}, e jetstream.KeyValueEntry) {
		if e.Operation() == jetstream.KeyValuePut {
			m[e.Key()] = struct{}{}
		} else {
			delete(m, e.Key())
		}
	}
	w, err := WatchBucket(ctx, kv, nil, WatchHandler{
		Begin: func() { initial = make(map[string]struct{}) },
		Entry: func(e jetstream.KeyValueEntry, loading bool) {
			if loading {
				set(initial, e)
				return
			}
			v.mu.Lock()
			set(v.agents, e)
			v.mu.Unlock()
		},
		Ready: func() {
			v.mu.Lock()
			v.agents, v.live = initial, true
			v.mu.Unlock()
			initial = nil
		},
		Lost: func() {
			v.mu.Lock()
			v.live = false
			v.mu.Unlock()
			log.Warn().Msg("suspension watch ended; reading the bucket until it runs again")
		},
	}, log)
	if err != nil {
		return nil, fmt.Errorf("watch suspensions: %w", err)
	}
	go func() {
		<-ctx.Done()
		w.Stop()
		v.mu.Lock()
		v.live = false
		v.mu.Unlock()
	}()
	return v, nil
}

// Suspension returns agent's suspension, or nil if it is not suspended, as
// the package function Suspension does, reading the bucket only when the
// view holds a record for agent or is not live.
func (v *SuspensionView) Suspension(ctx context.Context, agent string) (*events.Suspension, error) {
	v.mu.RLock()
	_, held := v.agents[agent]
	live := v.live
	v.mu.RUnlock()
	if live && !held {
		return nil, nil
	}
	return Suspension(ctx, v.kv, agent)
}

// Hold records that agent has a record, before the watch delivers it: a
// writer of suspensions calls it after its write, so that the view answers
// its own write at once. The record is confirmed in the bucket like any
// other; a record that is not there (reinstated meanwhile) answers "not
// suspended", and the watch removes it when its delete arrives.
func (v *SuspensionView) Hold(agent string) {
	v.mu.Lock()
	if v.agents == nil {
		v.agents = make(map[string]struct{})
	}
	v.agents[agent] = struct{}{}
	v.mu.Unlock()
}

// Live reports whether the view answers from memory (for tests and health).
func (v *SuspensionView) Live() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.live
}
