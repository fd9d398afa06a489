package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Streams are the names of the JetStream streams the topology consists
// of: the audit stream and each bucket's.
func Streams() []string {
	return []string{AuditStream, "KV_" + BucketGrants, "KV_" + BucketLeases, "KV_" + BucketSuspensions,
		"KV_" + BucketPending, "KV_" + BucketConfig, "KV_" + BucketSecrets, "KV_" + BucketPolicyHistory}
}

// ReplicaChange is what SetReplicas did to one stream.
type ReplicaChange struct {
	Stream   string `json:"stream"`
	From     int    `json:"from"`
	To       int    `json:"to"`
	Messages uint64 `json:"messages"`
	Leader   string `json:"leader,omitempty"`
}

// ErrNotCurrent is returned (wrapped) by SetReplicas when a stream's new
// replicas did not catch up before the context ended.
var ErrNotCurrent = errors.New("the stream's replicas are not current")

// SetReplicas moves every stream of the topology to n replicas, one stream
// at a time: it updates the stream's configuration (only the replicas
// change; JetStream copies the messages to the new peers through the
// stream's own replication, while it keeps serving reads and writes), then
// waits until every replica is current before the next. A stream at n
// already is left alone. It needs a credential that may update streams (the
// administrator's, jitd's). The changes made so far are returned with any
// error; calling it again continues.
func SetReplicas(ctx context.Context, js jetstream.JetStream, n int) ([]ReplicaChange, error) {
	return SetStreamReplicas(ctx, js, n, Streams())
}

// SetStreamReplicas is SetReplicas for the streams named, in that order.
func SetStreamReplicas(ctx context.Context, js jetstream.JetStream, n int, streams []string) ([]ReplicaChange, error) {
	if n < 1 || n > 5 {
		return nil, fmt.Errorf("replicas %d: JetStream allows 1 to 5", n)
	}
	var out []ReplicaChange
	for _, name := range streams {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		cfg := st.CachedInfo().Config
		ch := ReplicaChange{Stream: name, From: max(cfg.Replicas, 1), To: n}
		if ch.From != n {
			cfg.Replicas = n
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				return out, fmt.Errorf("stream %s to %d replicas: %w", name, n, err)
			}
		}
		info, err := waitCurrent(ctx, js, name, n)
		if err != nil {
			return out, err
		}
		ch.Messages = info.State.Msgs
		if info.Cluster != nil {
			ch.Leader = info.Cluster.Leader
		}
		out = append(out, ch)
	}
	return out, nil
}

// waitCurrent polls stream until it has n replicas, a leader and every
// follower current.
func waitCurrent(ctx context.Context, js jetstream.JetStream, name string, n int) (*jetstream.StreamInfo, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := js.Stream(ctx, name)
		if err == nil {
			info := st.CachedInfo()
			if current(info, n) {
				return info, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s at %d replicas: %w: %w", name, n, ErrNotCurrent, ctx.Err())
		case <-tick.C:
		}
	}
}

func current(info *jetstream.StreamInfo, n int) bool {
	if info.Config.Replicas != n {
		return false
	}
	if n == 1 {
		return info.Cluster == nil || len(info.Cluster.Replicas) == 0
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != n-1 {
		return false
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}
