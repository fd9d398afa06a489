package broker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KVChange is one stored change of a KV bucket: a value put, or a key
// deleted, purged or expired (Value empty).
type KVChange struct {
	Key   string
	Value []byte
	Op    jetstream.KeyValueOp
	// Seq is the change's sequence in the bucket's stream.
	Seq uint64
}

// APIPrefixOf is the JetStream API prefix a JetStream context uses.
func APIPrefixOf(js jetstream.JetStream) string {
	p := strings.TrimSuffix(js.Options().APIPrefix, ".")
	if p == "" {
		return jetstream.DefaultAPIPrefix[:len(jetstream.DefaultAPIPrefix)-1]
	}
	return p
}

// BucketFollower keeps a view of a KV bucket current without a consumer (a
// checker may not create one): it reads the bucket's stream with direct
// gets, then applies the changes the bucket republishes live on
// StatePrefix.<bucket>.<key>, in stream order per key. A change it may have
// missed (a reconnect, a dropped message, a gap in a key's sequence) makes
// it read again: Resync, which the owner calls when its connection was
// interrupted, is also run by Check.
type BucketFollower struct {
	nc     *nats.Conn
	prefix string
	bucket string
	stream string
	apply  func(KVChange)
	// keys, if set, are the only keys followed (read one by one, never by
	// scanning the stream: a principal may be allowed only those).
	keys []string

	sub  *nats.Subscription
	live chan *nats.Msg
	done chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex // serialises applies and guards known
	known      map[string]uint64
	dropped    int
	reconnects uint64
}

// FollowBucket reads bucket whole through the JetStream API under prefix
// (APIPrefixOf) and calls apply for every stored change in stream order,
// then keeps calling it for changes as they are stored, until Stop. It
// returns once the current contents were applied. apply is never called
// concurrently.
func FollowBucket(ctx context.Context, nc *nats.Conn, prefix, bucket string, apply func(KVChange)) (*BucketFollower, error) {
	return FollowKeys(ctx, nc, prefix, bucket, nil, apply)
}

// FollowKeys is FollowBucket for the given keys only (all keys if none).
func FollowKeys(ctx context.Context, nc *nats.Conn, prefix, bucket string, keys []string, apply func(KVChange)) (*BucketFollower, error) {
	f := &BucketFollower{nc: nc, prefix: prefix, bucket: bucket, stream: "KV_" + bucket, apply: apply, keys: keys,
		live: make(chan *nats.Msg, 4096), done: make(chan struct{}), known: map[string]uint64{}}
	subject := StatePrefix + "." + bucket + ".>"
	if len(keys) == 1 {
		subject = StatePrefix + "." + bucket + "." + keys[0]
	}
	sub, err := nc.ChanSubscribe(subject, f.live)
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", bucket, err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	f.sub = sub
	fctx, cancel := context.WithTimeout(ctx, DefaultAPITimeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("follow %s: %w", bucket, err)
	}
	f.reconnects = nc.Stats().Reconnects
	if err := f.scan(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	f.wg.Add(1)
	go f.run()
	return f, nil
}

// Stop ends following.
func (f *BucketFollower) Stop() {
	select {
	case <-f.done:
		return
	default:
	}
	close(f.done)
	_ = f.sub.Unsubscribe()
	f.wg.Wait()
}

func (f *BucketFollower) run() {
	defer f.wg.Done()
	for {
		select {
		case <-f.done:
			return
		case m := <-f.live:
			if gap := f.onLive(m); gap != "" {
				ctx, cancel := context.WithTimeout(context.Background(), DefaultAPITimeout)
				_ = f.fetchKey(ctx, gap)
				cancel()
			}
		}
	}
}

// DefaultAPITimeout bounds a follower's reads.
const DefaultAPITimeout = 5 * time.Second

// Check reads the bucket again if live changes may have been lost since the
// last check (the subscription dropped messages, or the connection was
// re-established). The owner calls it periodically, for example with its
// freshness probe; an error means the view may be behind.
func (f *BucketFollower) Check(ctx context.Context) error {
	dropped, _ := f.sub.Dropped()
	rc := f.nc.Stats().Reconnects
	f.mu.Lock()
	lost := dropped != f.dropped || rc != f.reconnects
	f.mu.Unlock()
	if !lost {
		return nil
	}
	if err := f.scan(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	f.dropped, f.reconnects = dropped, rc
	f.mu.Unlock()
	return nil
}

// onLive applies one republished change, or returns its key when the change
// shows an earlier one of the same key was missed.
func (f *BucketFollower) onLive(m *nats.Msg) (gapKey string) {
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return ""
	}
	key := strings.TrimPrefix(m.Subject, StatePrefix+"."+f.bucket+".")
	if len(f.keys) > 0 && !slices.Contains(f.keys, key) {
		return ""
	}
	last, _ := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64)
	f.mu.Lock()
	defer f.mu.Unlock()
	known := f.known[key]
	if seq <= known {
		return ""
	}
	if last > known {
		return key
	}
	f.applyLocked(KVChange{Key: key, Value: m.Data, Op: opOf(m.Header), Seq: seq})
	return ""
}

func (f *BucketFollower) applyLocked(c KVChange) {
	if c.Seq <= f.known[c.Key] {
		return
	}
	f.known[c.Key] = c.Seq
	f.apply(c)
}

// scan reads the whole stream in order, applying what is newer than known.
func (f *BucketFollower) scan(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*DefaultAPITimeout)
	defer cancel()
	if len(f.keys) > 0 {
		for _, k := range f.keys {
			if err := f.fetchKey(ctx, k); err != nil {
				return err
			}
		}
		return nil
	}
	var seq uint64 = 1
	for {
		page, err := DirectGet(ctx, f.nc, f.prefix, f.stream, DirectGetRequest{Seq: seq, Batch: 1024})
		if err != nil {
			return fmt.Errorf("read %s: %w", f.bucket, err)
		}
		f.mu.Lock()
		for _, m := range page.Msgs {
			key := strings.TrimPrefix(m.Subject, "$KV."+f.bucket+".")
			f.applyLocked(KVChange{Key: key, Value: m.Data, Op: opOf(m.Header), Seq: m.Seq})
		}
		f.mu.Unlock()
		if len(page.Msgs) == 0 || page.Pending == 0 {
			return nil
		}
		seq = page.Msgs[len(page.Msgs)-1].Seq + 1
	}
}

// fetchKey reads one key's last change.
func (f *BucketFollower) fetchKey(ctx context.Context, key string) error {
	subj := f.prefix + ".DIRECT.GET." + f.stream + ".$KV." + f.bucket + "." + key
	m, err := f.nc.RequestWithContext(ctx, subj, nil)
	if err != nil {
		return err
	}
	if st := m.Header.Get("Status"); st != "" {
		if st == "404" {
			return nil
		}
		return fmt.Errorf("read %s/%s: status %s", f.bucket, key, st)
	}
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return fmt.Errorf("read %s/%s: no sequence", f.bucket, key)
	}
	f.mu.Lock()
	f.applyLocked(KVChange{Key: key, Value: m.Data, Op: opOf(m.Header), Seq: seq})
	f.mu.Unlock()
	return nil
}

// opOf reads a stored message's KV operation: a delete or purge header, or a
// server marker (a TTL expiry).
func opOf(h nats.Header) jetstream.KeyValueOp {
	switch h.Get("KV-Operation") {
	case "DEL":
		return jetstream.KeyValueDelete
	case "PURGE":
		return jetstream.KeyValuePurge
	}
	if h.Get("Nats-Marker-Reason") != "" {
		return jetstream.KeyValuePurge
	}
	return jetstream.KeyValuePut
}
