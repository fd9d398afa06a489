package policy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots of the history window.
//
// A restarted policy service must not decide before its history holds every
// event before the request, and replaying 24 hours of the audit stream can
// take seconds on a busy system. So the service saves its window to the
// bucket jit_policy_history every few seconds and when it stops, and a
// restart reads the stream only after the saved point.
//
// The bucket holds one key per agent, "agent.<id>", with that agent's
// lists exactly as the history holds them and "through", the stream
// sequence up to which they are complete; and the key "meta" with the
// sequence L that every agent key is complete through: a save writes the
// agents that changed since the previous save, then meta. An agent key
// that was not rewritten has had no event since it was written, so it too
// is complete through L. Keys only move forward (a save never replaces a
// key with an older "through"), so that replicas saving concurrently never
// undo each other's work; an agent key newer than meta (a save cut short)
// is used too, and the replay skips its events up to its own "through".
// The saved stamps are the stream's own (sequence and broker time), so a
// history restored from a snapshot counts exactly as one replayed from the
// stream.

// SnapshotInterval is how often the policy service saves its history, at
// most: a save that took d waits at least snapshotCost×d before the next,
// so that saving large windows never takes more than a tenth of the time.
const SnapshotInterval = 2 * time.Second

const snapshotCost = 10

const (
	snapshotMetaKey     = "meta"
	snapshotAgentPrefix = "agent."
	snapshotVersion     = 1
)

// snapshotMeta is the value of the "meta" key.
type snapshotMeta struct {
	Through uint64    `json:"through"`
	SavedAt time.Time `json:"saved_at"`
}

// encodeAgent writes a's lists, complete through through, compactly:
// a version byte, through, then each list as a count and its stamps as
// differences from the previous one (sequence, then nanoseconds).
func encodeAgent(through uint64, a *agentHistory) []byte {
	n := len(a.requests) + len(a.denials) + len(a.grants) + len(a.fires)
	b := make([]byte, 0, 16+n*8)
	b = append(b, snapshotVersion)
	b = binary.AppendUvarint(b, through)
	for _, list := range [][]stamp{a.requests, a.denials, a.grants, a.fires} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		var seq uint64
		var ns int64
		for _, st := range list {
			b = binary.AppendVarint(b, int64(st.seq-seq))
			b = binary.AppendVarint(b, st.at.UnixNano()-ns)
			seq, ns = st.seq, st.at.UnixNano()
		}
	}
	return b
}

var errSnapshot = errors.New("history snapshot: malformed")

// decodeAgent reads what encodeAgent wrote.
func decodeAgent(b []byte) (uint64, *agentHistory, error) {
	if len(b) == 0 || b[0] != snapshotVersion {
		return 0, nil, fmt.Errorf("%w: unknown version", errSnapshot)
	}
	b = b[1:]
	through, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, errSnapshot
	}
	b = b[k:]
	a := &agentHistory{}
	for _, list := range []*[]stamp{&a.requests, &a.denials, &a.grants, &a.fires} {
		n, k := binary.Uvarint(b)
		// Every stamp takes at least two bytes.
		if k <= 0 || n > maxPerList || n > uint64(len(b)-k)/2 {
			return 0, nil, errSnapshot
		}
		b = b[k:]
		*list = make([]stamp, 0, n)
		var seq uint64
		var ns int64
		for range n {
			ds, k1 := binary.Varint(b)
			if k1 <= 0 {
				return 0, nil, errSnapshot
			}
			dn, k2 := binary.Varint(b[k1:])
			if k2 <= 0 {
				return 0, nil, errSnapshot
			}
			b = b[k1+k2:]
			seq, ns = seq+uint64(ds), ns+dn
			if seq == 0 || seq > through {
				return 0, nil, errSnapshot
			}
			*list = append(*list, stamp{seq: seq, at: time.Unix(0, ns).UTC()})
		}
	}
	if len(b) != 0 {
		return 0, nil, fmt.Errorf("%w: %d bytes left over", errSnapshot, len(b))
	}
	return through, a, nil
}

// UseSnapshots makes Follow start from the snapshot in kv (the bucket
// jit_policy_history, with the broker's errors: broker.MapKV) and Save
// write there. Call it before Follow.
func (h *History) UseSnapshots(kv jetstream.KeyValue) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.store = kv
}

// load restores the snapshot saved before now (within the window) and
// returns the stream sequence it is complete through, or 0 when there is
// none to use: nothing saved, saved too long ago, or beyond the stream's
// end (a stream made anew). h.mu is not held; h is not yet followed.
func (h *History) load(ctx context.Context, kv jetstream.KeyValue, now time.Time, streamLast uint64) (uint64, error) {
	var meta snapshotMeta
	switch e, err := kv.Get(ctx, snapshotMetaKey); {
	case errors.Is(err, broker.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("history snapshot: %w", err)
	default:
		if err := json.Unmarshal(e.Value(), &meta); err != nil {
			return 0, fmt.Errorf("%w: meta: %v", errSnapshot, err)
		}
	}
	if meta.Through == 0 || meta.Through > streamLast || meta.SavedAt.Before(now.Add(-config.HistoryWindow)) {
		return 0, nil
	}
	w, err := kv.Watch(ctx, snapshotAgentPrefix+">", jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("history snapshot: %w", err)
	}
	defer w.Stop()
	agents, through := map[string]*agentHistory{}, map[string]uint64{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if e == nil {
			break // every key read
		}
		agent := strings.TrimPrefix(e.Key(), snapshotAgentPrefix)
		t, a, err := decodeAgent(e.Value())
		if err != nil || !events.ValidID(agent) || t > streamLast {
			// Not ours to guess at: replay the whole window instead.
			return 0, fmt.Errorf("history snapshot of %q: %w", agent, errors.Join(err, errSnapshot))
		}
		agents[agent], through[agent] = a, t
	}
	h.mu.Lock()
	h.agents, h.through, h.last = agents, through, meta.Through
	h.dirty = map[string]struct{}{}
	h.mu.Unlock()
	return meta.Through, nil
}

// Save writes the agents whose lists changed since the last save, then the
// sequence the whole history is complete through. It does nothing without
// UseSnapshots or before Follow has read anything.
func (h *History) Save(ctx context.Context, now time.Time) error {
	h.mu.Lock()
	kv, last := h.store, h.last
	if kv == nil || last == 0 {
		h.mu.Unlock()
		return nil
	}
	type rec struct {
		agent string
		value []byte
	}
	recs := make([]rec, 0, len(h.dirty))
	for agent := range h.dirty {
		recs = append(recs, rec{agent, encodeAgent(last, h.agents[agent])})
	}
	dirty := h.dirty
	h.dirty = map[string]struct{}{}
	h.mu.Unlock()

	var err error
	for i, r := range recs {
		if err = putForward(ctx, kv, snapshotAgentPrefix+r.agent, r.value, last, agentThrough); err != nil {
			// What was not written is written by the next save.
			h.mu.Lock()
			for _, r := range recs[i:] {
				h.dirty[r.agent] = struct{}{}
			}
			h.mu.Unlock()
			return err
		}
		delete(dirty, r.agent)
	}
	meta, _ := json.Marshal(snapshotMeta{Through: last, SavedAt: now.UTC()})
	return putForward(ctx, kv, snapshotMetaKey, meta, last, metaThrough)
}

func agentThrough(b []byte) uint64 {
	if len(b) < 2 || b[0] != snapshotVersion {
		return 0
	}
	t, _ := binary.Uvarint(b[1:])
	return t
}

func metaThrough(b []byte) uint64 {
	var m snapshotMeta
	_ = json.Unmarshal(b, &m)
	return m.Through
}

// putForward writes value at key unless the key already holds a snapshot
// complete through through or later (another replica's, newer than ours),
// with a compare-and-set so that a concurrent writer is seen.
func putForward(ctx context.Context, kv jetstream.KeyValue, key string, value []byte, through uint64, throughOf func([]byte) uint64) error {
	for range 3 {
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, broker.ErrNotFound):
			_, err = kv.Create(ctx, key, value)
		case err != nil:
		case throughOf(e.Value()) >= through:
			return nil
		default:
			_, err = kv.Update(ctx, key, value, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, broker.ErrConflict) {
			return fmt.Errorf("history snapshot %s: %w", key, err)
		}
	}
	return nil // others keep writing newer snapshots
}
