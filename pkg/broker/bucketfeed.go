package broker

import (
	"context"
	"encoding/json"
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

	// What Check learnt from the stream's leader (whole-bucket followers):
	// lastSeen is its last sequence at the latest answer, safe the one
	// before (every change up to safe has had a probe interval to arrive
	// live), and unconfirmed is set while the leader does not answer.
	lastSeen, safe uint64
	unconfirmed    bool
	// settling is set by the first answer after a time without one, and
	// settleLeader is who gave it: see confirm.
	settling     bool
	settleLeader string
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
//
// A follower of a whole bucket also asks the bucket stream's leader for its
// last sequence (STREAM.INFO, which in a cluster only the leader answers),
// so that a server cut off from the rest of its cluster, which still
// answers its clients but no longer hears of new changes, makes Check fail
// rather than pass: a checker behind it fails closed after its staleness
// bound. When the leader answers again, the follower reads every change
// since the last sequence it was sure of, whatever the live feed lost
// meanwhile (live changes of one key show a gap; changes of keys that were
// not written again would not).
func (f *BucketFollower) Check(ctx context.Context) error {
	dropped, _ := f.sub.Dropped()
	rc := f.nc.Stats().Reconnects
	f.mu.Lock()
	lost := dropped != f.dropped || rc != f.reconnects
	f.mu.Unlock()
	if lost {
		if err := f.scan(ctx); err != nil {
			return err
		}
		f.mu.Lock()
		f.dropped, f.reconnects = dropped, rc
		f.mu.Unlock()
	}
	if len(f.keys) > 0 {
		return nil
	}
	return f.confirm(ctx)
}

// probeTimeout bounds confirm's question to the stream's leader.
const probeTimeout = time.Second

// confirm asks the stream's leader for its last sequence and, after a time
// it did not answer, catches up from the last sequence known to be safe.
func (f *BucketFollower) confirm(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	last, err := StreamState(pctx, f.nc, f.prefix, f.stream)
	cancel()
	f.mu.Lock()
	if err != nil {
		f.unconfirmed, f.settling = true, false
		f.mu.Unlock()
		return fmt.Errorf("confirm %s with the stream's leader: %w", f.bucket, err)
	}
	from, catchUp := f.safe+1, f.unconfirmed
	if catchUp && (!f.settling || f.settleLeader != last.Leader) {
		// A leader that was cut off still answers, with the quorum it
		// heard from before, until a heartbeat of the new leader reaches
		// it just after the partition heals: an answer counts only when
		// the next one, a probe later, comes from the same leader.
		f.settling, f.settleLeader = true, last.Leader
		f.mu.Unlock()
		return fmt.Errorf("confirm %s: %s answered as the stream's leader; waiting for the next answer", f.bucket, last.Leader)
	}
	safe := f.lastSeen
	f.mu.Unlock()
	if catchUp {
		read, err := f.scanFrom(ctx, from)
		if err != nil {
			return err
		}
		// The read may be answered by a replica that is still catching up
		// (the server that was cut off): until it has what the leader had,
		// the view is not confirmed. (Should the stream's last message
		// itself have been removed, with nothing written after it, this
		// holds until the next write: the checker stays stale meanwhile,
		// which fails closed.)
		if last.LastSeq >= from && read < last.LastSeq && last.Msgs > 0 {
			return fmt.Errorf("confirm %s: read through %d, the stream's leader has %d", f.bucket, read, last.LastSeq)
		}
		safe = max(safe, read)
	}
	f.mu.Lock()
	f.unconfirmed, f.settling = false, false
	f.safe, f.lastSeen = max(f.safe, safe), last.LastSeq
	f.mu.Unlock()
	return nil
}

// StreamPosition is where a stream is: its last sequence and how many
// messages it holds.
type StreamPosition struct {
	LastSeq uint64 `json:"last_seq"`
	Msgs    uint64 `json:"messages"`
	// Leader is the server that answered as the stream's leader (empty
	// for a stream that is not replicated).
	Leader string `json:"-"`
}

// quorumSeen is how recently a replicated stream's leader must have heard
// from enough followers to make a quorum for its answer to count: its
// followers answer its heartbeats every second.
const quorumSeen = 3 * time.Second

// StreamState asks for stream's position through the JetStream API under
// prefix. In a cluster only the stream's leader answers, and the answer
// counts only if that leader heard from a quorum of the stream's replicas
// within quorumSeen: a leader cut off from its followers keeps answering
// for up to twenty seconds before it steps down, while the others have
// elected a new leader and taken writes it does not know of. An answer is
// therefore proof that the server the connection uses is in touch with the
// stream's current state.
func StreamState(ctx context.Context, nc *nats.Conn, prefix, stream string) (StreamPosition, error) {
	m, err := nc.RequestWithContext(ctx, prefix+".STREAM.INFO."+stream, nil)
	if err != nil {
		return StreamPosition{}, err
	}
	var info struct {
		Config struct {
			Replicas int `json:"num_replicas"`
		} `json:"config"`
		State   StreamPosition `json:"state"`
		Cluster *struct {
			Leader   string `json:"leader"`
			Replicas []struct {
				Name    string        `json:"name"`
				Offline bool          `json:"offline"`
				Active  time.Duration `json:"active"`
			} `json:"replicas"`
		} `json:"cluster"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return StreamPosition{}, fmt.Errorf("stream info %s: %w", stream, err)
	}
	if info.Error != nil {
		return StreamPosition{}, fmt.Errorf("stream info %s: %d %s", stream, info.Error.Code, info.Error.Description)
	}
	if c := info.Cluster; c != nil && (len(c.Replicas) > 0 || info.Config.Replicas > 1) {
		if c.Leader == "" {
			// A replica that finds its group leaderless (cut off, its
			// election timed out) answers from its own copy.
			return StreamPosition{}, fmt.Errorf("stream info %s: answered without a leader", stream)
		}
		seen := 1 // the leader
		for _, r := range c.Replicas {
			if !r.Offline && r.Active < quorumSeen {
				seen++
			}
		}
		if n := max(len(c.Replicas)+1, info.Config.Replicas); seen <= n/2 {
			return StreamPosition{}, fmt.Errorf("stream info %s: its leader %s has heard from %d of %d replicas within %s",
				stream, c.Leader, seen, n, quorumSeen)
		}
	}
	pos := info.State
	if info.Cluster != nil {
		pos.Leader = info.Cluster.Leader
	}
	return pos, nil
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
	if len(f.keys) > 0 {
		ctx, cancel := context.WithTimeout(ctx, 10*DefaultAPITimeout)
		defer cancel()
		for _, k := range f.keys {
			if err := f.fetchKey(ctx, k); err != nil {
				return err
			}
		}
		return nil
	}
	last, err := f.scanFrom(ctx, 1)
	if err == nil {
		f.mu.Lock()
		f.safe = max(f.safe, last)
		f.mu.Unlock()
	}
	return err
}

// scanFrom reads the stream in order from sequence seq, applying what is
// newer than known, and returns the last sequence it read (0 if none).
func (f *BucketFollower) scanFrom(ctx context.Context, seq uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*DefaultAPITimeout)
	defer cancel()
	var last uint64
	for {
		page, err := DirectGet(ctx, f.nc, f.prefix, f.stream, DirectGetRequest{Seq: seq, Batch: 1024})
		if err != nil {
			return last, fmt.Errorf("read %s: %w", f.bucket, err)
		}
		f.mu.Lock()
		for _, m := range page.Msgs {
			key := strings.TrimPrefix(m.Subject, "$KV."+f.bucket+".")
			f.applyLocked(KVChange{Key: key, Value: m.Data, Op: opOf(m.Header), Seq: m.Seq})
			last = m.Seq
		}
		f.mu.Unlock()
		if len(page.Msgs) == 0 || page.Pending == 0 {
			return last, nil
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
