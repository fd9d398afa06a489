package revoker

import (
	"slices"
	"sync"
)

// leaseIndex lists, per agent, the leases the lease watch last saw active.
// A guardrail revokes the grants it lists instead of listing the ledger on
// the broker (a filtered consumer per firing, milliseconds with a large
// ledger). It is never the only safeguard: the suspension is stored before
// the index is read, and a lease the watch delivers later is checked
// against the suspension when it arrives (checkLeaseJob). Until the watch
// has delivered the whole ledger it is not ready, and callers list the
// ledger on the broker.
type leaseIndex struct {
	mu     sync.Mutex
	agents map[string]map[string]struct{}
	ready  bool
}

// set records key, a lease of agent, as active or not.
func (x *leaseIndex) set(agent, key string, active bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	keys := x.agents[agent]
	if !active {
		delete(keys, key)
		if len(keys) == 0 {
			delete(x.agents, agent)
		}
		return
	}
	if keys == nil {
		if x.agents == nil {
			x.agents = make(map[string]map[string]struct{})
		}
		keys = make(map[string]struct{}, 1)
		x.agents[agent] = keys
	}
	keys[key] = struct{}{}
}

// markReady says the watch has delivered the whole ledger.
func (x *leaseIndex) markReady() {
	x.mu.Lock()
	x.ready = true
	x.mu.Unlock()
}

// reset empties the index before the watch replays the ledger.
func (x *leaseIndex) reset() {
	x.mu.Lock()
	x.agents, x.ready = nil, false
	x.mu.Unlock()
}

// keys returns agent's active lease keys, sorted; ok is false while the
// index is not ready.
func (x *leaseIndex) keys(agent string) (keys []string, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.ready {
		return nil, false
	}
	for k := range x.agents[agent] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, true
}
