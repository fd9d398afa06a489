package web

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// hub tells the console's live streams that something they show changed.
// It watches the pending, grants, leases and suspensions buckets and polls
// the revokers' failing revocations (from the first subscriber on, until
// close), and signals every subscriber; a subscriber's channel holds one
// signal, so bursts coalesce and a slow browser never holds the watch up.
type hub struct {
	w *Console

	mu       sync.Mutex
	subs     map[chan struct{}]struct{}
	started  bool
	closed   bool
	watchers []jetstream.KeyWatcher
}

func newHub(w *Console) *hub { return &hub{w: w, subs: map[chan struct{}]struct{}{}} }

// subscribe returns a channel that receives a signal after each change, and
// the function that ends the subscription. It fails once the hub is
// closed.
func (h *hub) subscribe() (<-chan struct{}, func(), bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, false
	}
	if !h.started {
		h.started = true
		h.startLocked()
	}
	ch := make(chan struct{}, 1)
	h.subs[ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[ch]; ok {
			delete(h.subs, ch)
			close(ch)
		}
	}, true
}

func (h *hub) startLocked() {
	h.w.failing.start(h.w.ctx)
	b := h.w.d.Buckets
	for _, kv := range []jetstream.KeyValue{b.Pending, b.Grants, b.Leases, b.Suspensions} {
		w, err := kv.WatchAll(h.w.ctx, jetstream.UpdatesOnly())
		if err != nil {
			h.w.log.Error().Err(err).Str("bucket", kv.Bucket()).Msg("console: watch bucket; live updates miss its changes")
			continue
		}
		h.watchers = append(h.watchers, w)
		go func() {
			for e := range w.Updates() {
				if e != nil {
					h.signal()
				}
			}
		}()
	}
}

func (h *hub) signal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// close ends every stream and the watches. It is safe to call more than
// once.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for ch := range h.subs {
		close(ch)
	}
	h.subs = map[chan struct{}]struct{}{}
	for _, w := range h.watchers {
		_ = w.Stop()
	}
}
