package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PutKeepTTL writes value to key in bucket with a fresh per-key TTL, only if
// the key's last revision is rev. With rev 0 it writes only if the subject
// holds no message at all, not even a delete or expiry marker: unlike
// KeyValue.Create, which succeeds over a deleted or expired key, it can never
// bring back a key that existed. Put and Update would drop a key's TTL; this
// keeps one, atomically. A lost race returns ErrConflict (both the server's
// single-server and replicated error codes).
func PutKeepTTL(ctx context.Context, js jetstream.JetStream, bucket, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Data = value
	op := "update"
	if rev == 0 {
		op = "create"
	}
	end := traceWrite(ctx, bucket, op, key, value)
	ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgTTL(ttl), jetstream.WithExpectLastSequencePerSubject(rev))
	end(err)
	if err != nil {
		if isWrongLastSequence(err) {
			return 0, ErrConflict
		}
		return 0, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return ack.Sequence, nil
}

// GetJSON reads key from kv into v and returns its revision. It returns
// ErrNotFound for a missing or deleted key.
func GetJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		return 0, MapError(err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode %s/%s: %w", kv.Bucket(), key, err)
	}
	return e.Revision(), nil
}

// Suspension reads agent's record from the suspensions bucket kv: nil if
// the agent is not suspended. A record that exists but does not decode
// still counts as a suspension (fail closed): it is returned with only
// Agent set.
func Suspension(ctx context.Context, kv jetstream.KeyValue, agent string) (*events.Suspension, error) {
	e, err := kv.Get(ctx, agent)
	if errors.Is(MapError(err), ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read suspension of %s: %w", agent, err)
	}
	var s events.Suspension
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return &events.Suspension{Agent: agent}, nil
	}
	return &s, nil
}
