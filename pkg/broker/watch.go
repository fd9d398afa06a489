package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// WatchHandler receives the entries of one bucket from WatchBucket. Its
// calls never overlap and come in this order for every watch: Begin, the
// bucket's current entries (initial true), Ready, then live changes
// (initial false), until Lost if the watch ends on its own. Any of the
// functions may be nil.
type WatchHandler struct {
	// Begin starts a watch: the current contents follow, so a view built
	// from them replaces the one before.
	Begin func()
	// Entry is one put, delete or purge (an expiry is a purge).
	Entry func(e jetstream.KeyValueEntry, initial bool)
	// Ready means the watch has delivered the bucket's contents as they
	// were when it started: from now on the view is current.
	Ready func()
	// Lost means the watch ended without being stopped (its subscription
	// closed: the connection closed, or its consumer was deleted) and the
	// view is no longer current. An owner whose view gates permissions
	// must fail closed from here until the next Ready: read the bucket
	// for each answer, or refuse.
	Lost func()
}

// BucketWatch follows a KV bucket with a watch (an ordered consumer),
// with one policy when the watch ends: report Lost, wait Backoff, watch
// again from the bucket's current contents, and keep trying with a
// growing backoff (reset by each Ready) until Stop or the context ends.
// A watch is never given up: what it feeds goes on failing closed, not
// stale.
type BucketWatch struct {
	kv   jetstream.KeyValue
	keys []string
	h    WatchHandler
	log  zerolog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	live bool
}

// WatchBucket follows keys of kv (all keys if none) and calls h as
// WatchHandler says until Stop or ctx ends. It returns once the first
// watch is Ready, or an error if that watch could not start or ctx ended
// first (nothing keeps running then).
func WatchBucket(ctx context.Context, kv jetstream.KeyValue, keys []string, h WatchHandler, log zerolog.Logger) (*BucketWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	b := &BucketWatch{kv: kv, keys: keys, h: h, log: log.With().Str("bucket", kv.Bucket()).Logger(), cancel: cancel, done: make(chan struct{})}
	w, err := b.watch(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	ready := make(chan struct{})
	go b.run(ctx, w, ready)
	select {
	case <-ready:
		return b, nil
	case <-ctx.Done():
		b.Stop()
		return nil, fmt.Errorf("watch %s: %w", kv.Bucket(), ctx.Err())
	}
}

func (b *BucketWatch) watch(ctx context.Context) (jetstream.KeyWatcher, error) {
	var (
		w   jetstream.KeyWatcher
		err error
	)
	if len(b.keys) == 0 {
		w, err = b.kv.WatchAll(ctx)
	} else {
		// A copy: the client library rewrites the slice it is given.
		w, err = b.kv.WatchFiltered(ctx, slices.Clone(b.keys))
	}
	return w, err
}

func (b *BucketWatch) run(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	defer close(b.done)
	for attempt := uint64(0); ; attempt++ {
		_, failed := w.(ClosedWatcher)
		if !failed && b.feed(ctx, w, ready) {
			attempt = 0
		}
		_ = w.Stop()
		if ctx.Err() != nil {
			return
		}
		b.setLive(false)
		if !failed && b.h.Lost != nil {
			b.h.Lost() // once per loss, not once per failed attempt
		}
		delay := Backoff(attempt + 1)
		b.log.Warn().Dur("retry_in", delay).Msg("bucket watch ended; watching again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		nw, err := b.watch(ctx)
		if err != nil {
			b.log.Error().Err(err).Msg("watch bucket")
			w = ClosedWatcher{}
			continue
		}
		w = nw
	}
}

// feed delivers one watch's entries until it ends; it reports whether the
// watch became Ready.
func (b *BucketWatch) feed(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) bool {
	if b.h.Begin != nil {
		b.h.Begin()
	}
	initial := true
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return !initial
		case u, ok := <-w.Updates():
			if !ok {
				return !initial
			}
			e = u
		}
		if e == nil {
			if initial {
				initial = false
				if b.h.Ready != nil {
					b.h.Ready()
				}
				b.setLive(true)
				select {
				case <-ready:
				default:
					close(ready)
				}
			}
			continue
		}
		if b.h.Entry != nil {
			b.h.Entry(e, initial)
		}
	}
}

func (b *BucketWatch) setLive(live bool) {
	b.mu.Lock()
	b.live = live
	b.mu.Unlock()
}

// Live reports whether the current watch has delivered the bucket's
// contents and still runs.
func (b *BucketWatch) Live() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live
}

// Stop ends the watch and waits until the handler is no longer called. It
// is safe to call more than once.
func (b *BucketWatch) Stop() {
	b.cancel()
	<-b.done
	b.setLive(false)
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
