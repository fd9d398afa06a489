package broker

import (
	"context"
	"errors"
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
//
// A watch also ends when it stalls: its consumer lives on one server (one
// of the stream's, drawn at random when it was made), and when that server
// dies, or the consumer is deleted, the subscription is told nothing. The client library
// notices only after two missed 5-second heartbeats, 10-20 s, during which
// every change is missed: for the revoker's leases, grants without a timer.
// So a watch that has delivered nothing for a whole stallCheck while the
// bucket held a change it has not delivered, already a stallCheck before,
// is ended and watched again (stallCheck to 3 stallChecks after the
// bucket could be read again).
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

// stallCheck is how often a watch that delivered nothing asks the bucket
// whether it moved on without it.
var stallCheck = time.Second

// WatchBucket follows keys of kv (all keys if none) and calls h as
// WatchHandler says until Stop or ctx ends. It returns once the first
// watch is Ready, or an error if that watch could not start or ctx ended
// first (nothing keeps running then).
func WatchBucket(ctx context.Context, kv jetstream.KeyValue, keys []string, h WatchHandler, log zerolog.Logger) (*BucketWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	b := &BucketWatch{kv: kv, keys: keys, h: h, log: log.With().Str("bucket", kv.Bucket()).Logger(), cancel: cancel, done: make(chan struct{})}
	floor := b.head(ctx)
	w, err := b.watch(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	ready := make(chan struct{})
	go b.run(ctx, w, ready, floor)
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

func (b *BucketWatch) run(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}, floor uint64) {
	defer close(b.done)
	for attempt := uint64(0); ; attempt++ {
		_, failed := w.(ClosedWatcher)
		stalled := false
		if !failed {
			var wasReady bool
			if wasReady, stalled = b.feed(ctx, w, ready, floor); wasReady {
				attempt = 0
			}
		}
		if stalled {
			// Stop asks the server to delete the watch's consumer and waits
			// for the answer, up to the client's 5 s: for a consumer that
			// died with its server, nobody answers. Watch again at once.
			go func(w jetstream.KeyWatcher) { _ = w.Stop() }(w)
		} else {
			_ = w.Stop()
		}
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
		floor = b.head(ctx)
		nw, err := b.watchWithin(ctx, rewatchCreate)
		if err != nil {
			b.log.Error().Err(err).Msg("watch bucket")
			w = ClosedWatcher{}
			continue
		}
		w = nw
	}
}

// rewatchCreate bounds the making of a new watch after one ended. A watch's
// consumer is placed on a server the meta leader picks at random among the
// stream's peers, and a server that was killed or cut off stays among them
// (nothing marks it offline): a watch placed there is never made, and the
// client would wait its whole 5 s for the answer before trying again.
var rewatchCreate = 2 * time.Second

// errWatchSlow is a watch that was not made within rewatchCreate.
var errWatchSlow = errors.New("watch not made in time (its consumer's server may be gone)")

// watchWithin is watch bounded by d. The watch lives as long as the context
// it is made with, so it is made with one of its own: a watch given up on
// is cancelled, and one made after all ends at once.
func (b *BucketWatch) watchWithin(ctx context.Context, d time.Duration) (jetstream.KeyWatcher, error) {
	wctx, cancel := context.WithCancel(ctx)
	type made struct {
		w   jetstream.KeyWatcher
		err error
	}
	ch := make(chan made, 1)
	go func() {
		w, err := b.watch(wctx)
		ch <- made{w, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m := <-ch:
		if m.err != nil {
			cancel()
			return nil, m.err
		}
		return cancelOnStop{KeyWatcher: m.w, cancel: cancel}, nil
	case <-t.C:
		cancel()
		return nil, errWatchSlow
	}
}

// cancelOnStop releases a watch's own context when it is stopped.
type cancelOnStop struct {
	jetstream.KeyWatcher
	cancel context.CancelFunc
}

func (w cancelOnStop) Stop() error {
	err := w.KeyWatcher.Stop()
	w.cancel()
	return err
}

// head returns the revision of the newest change of the watched keys the
// bucket holds, 0 if it cannot tell (no stream leader, say). Read before a
// watch starts, everything up to it is in the watch's initial values.
func (b *BucketWatch) head(ctx context.Context) uint64 {
	ctx, cancel := context.WithTimeout(ctx, stallCheck)
	defer cancel()
	if len(b.keys) == 0 {
		st, err := b.kv.Status(ctx)
		if err != nil {
			return 0
		}
		if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			return s.StreamInfo().State.LastSeq
		}
		return 0
	}
	var rev uint64
	for _, k := range b.keys {
		// A deleted key is not found, and its marker was delivered with
		// it; a key with wildcards cannot be read this way.
		if e, err := b.kv.Get(ctx, k); err == nil {
			rev = max(rev, e.Revision())
		}
	}
	return rev
}

// feed delivers one watch's entries until it ends or stalls; it reports
// whether the watch became Ready, and whether it stalled. floor is the
// bucket's head read just before the watch started.
func (b *BucketWatch) feed(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}, floor uint64) (wasReady, stalled bool) {
	if b.h.Begin != nil {
		b.h.Begin()
	}
	initial := true
	tick := time.NewTicker(stallCheck)
	defer tick.Stop()
	// delivered is the newest revision delivered; progressed, whether any
	// entry came since the last tick; owed, a head that was beyond what
	// was delivered at the last tick.
	var (
		delivered, owed uint64
		progressed      bool
	)
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return !initial, false
		case u, ok := <-w.Updates():
			if !ok {
				return !initial, false
			}
			e = u
		case <-tick.C:
			if initial || progressed {
				// Still catching up, or moving: not stalled.
				progressed, owed = false, 0
				continue
			}
			if owed > delivered {
				b.log.Warn().Uint64("delivered", delivered).Uint64("bucket_head", owed).Dur("silent_for", 2*stallCheck).
					Msg("bucket watch stalled: its consumer is gone; watching again")
				return true, true
			}
			owed = 0
			if h := b.head(ctx); h > max(delivered, floor) {
				owed = h
			}
			continue
		}
		progressed = true
		if e != nil {
			delivered = max(delivered, e.Revision())
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
