package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

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
// once it holds the whole bucket. It follows the bucket until ctx ends,
// watching again if its watch ends.
func WatchSuspensions(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger) (*SuspensionView, error) {
	v := &SuspensionView{kv: kv, log: log}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch suspensions: %w", err)
	}
	ready := make(chan struct{})
	go v.follow(ctx, w, ready)
	select {
	case <-ready:
		return v, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("watch suspensions: %w", ctx.Err())
	}
}

func (v *SuspensionView) follow(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	for attempt := uint64(0); ; attempt++ {
		v.apply(ctx, w, ready)
		_ = w.Stop()
		v.mu.Lock()
		v.live = false
		v.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		v.log.Warn().Msg("suspension watch ended; reading the bucket until it runs again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(Backoff(attempt + 1)):
		}
		nw, err := v.kv.WatchAll(ctx)
		if err != nil {
			v.log.Error().Err(err).Msg("watch suspensions")
			w = ClosedWatcher{}
			continue
		}
		w = nw
	}
}

// apply feeds one watch's entries into the view until the watch ends.
func (v *SuspensionView) apply(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	initial := make(map[string]struct{})
	loading := true
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return
		case u, ok := <-w.Updates():
			if !ok {
				return
			}
			e = u
		}
		if e == nil {
			if loading {
				loading = false
				v.mu.Lock()
				v.agents, v.live = initial, true
				v.mu.Unlock()
				select {
				case <-ready:
				default:
					close(ready)
				}
			}
			continue
		}
		put := e.Operation() == jetstream.KeyValuePut
		if loading {
			if put {
				initial[e.Key()] = struct{}{}
			} else {
				delete(initial, e.Key())
			}
			continue
		}
		v.mu.Lock()
		if put {
			v.agents[e.Key()] = struct{}{}
		} else {
			delete(v.agents, e.Key())
		}
		v.mu.Unlock()
	}
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

// ClosedWatcher stands for a KV watch that could not be started: its
// updates end at once, so a loop that watches again tries once more.
type ClosedWatcher struct{}

// Updates returns a closed channel.
func (ClosedWatcher) Updates() <-chan jetstream.KeyValueEntry {
	ch := make(chan jetstream.KeyValueEntry)
	close(ch)
	return ch
}

// Stop does nothing.
func (ClosedWatcher) Stop() error { return nil }
