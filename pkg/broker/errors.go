package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"

	"github.com/agentjit/jit/pkg/tracing"
	"github.com/nats-io/nats.go/jetstream"
)

// The broker's errors as the services see them. pkg/broker is the edge to
// NATS: every KV handle that OpenBuckets returns, and MapError for the few
// direct calls a service's store file makes, turn the client library's
// errors into these, so a service compares with errors.Is(err,
// broker.ErrNotFound) and never with a jetstream.Err… value.
//
// A mapped error keeps the library's error too (errors.Is matches both)
// and its message, so logs and replies read as before.
var (
	// ErrNotFound means the key, message or consumer does not exist, or a
	// key was deleted or purged: jetstream.ErrKeyNotFound,
	// ErrMsgNotFound, ErrNoKeysFound, ErrConsumerNotFound.
	ErrNotFound = errors.New("not found")

	// ErrConflict means a KV write lost a compare-and-set race: a Create
	// over a live key (jetstream.ErrKeyExists), an Update or Delete with a
	// stale revision, or an expected-last-sequence publish that found
	// another (both the single-server and the replicated error codes).
	ErrConflict = errors.New("conflicting write")
)

// MapError returns err as one of the broker's errors when it is one of
// the library's errors listed at ErrNotFound and ErrConflict, and err
// unchanged otherwise (nil stays nil).
func MapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict):
		return err
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrMsgNotFound),
		errors.Is(err, jetstream.ErrNoKeysFound), errors.Is(err, jetstream.ErrConsumerNotFound):
		return mapped{kind: ErrNotFound, err: err}
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch), isWrongLastSequence(err):
		return mapped{kind: ErrConflict, err: err}
	}
	return err
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// mapped is a library error classified as one of the broker's: it reads as
// the library's message and matches both.
type mapped struct{ kind, err error }

func (m mapped) Error() string   { return m.err.Error() }
func (m mapped) Unwrap() []error { return []error{m.kind, m.err} }

// mappedKV is a KeyValue whose reads and writes return the broker's errors
// (MapError). Watches and the rest pass through.
type mappedKV struct{ jetstream.KeyValue }

// MapKV wraps kv so that its Get, Create, Update, Put, Delete, Purge and
// key listings return the broker's errors (MapError). OpenBuckets returns
// only wrapped handles; wrapping twice does nothing more.
func MapKV(kv jetstream.KeyValue) jetstream.KeyValue {
	if _, ok := kv.(mappedKV); ok || kv == nil {
		return kv
	}
	return mappedKV{kv}
}

// trace starts the span of a write of key (traceWrite).
func (k mappedKV) trace(ctx context.Context, op, key string, value []byte) func(error) {
	if !tracing.Enabled() {
		return func(error) {}
	}
	return traceWrite(ctx, k.Bucket(), op, key, value)
}

// traceWrite starts the span of a write of key in bucket
// (tracing.StartWrite), about the request value names (a grant's
// request_id, a lease's grant's, a pending record's decision's), read only
// when tracing is on.
func traceWrite(ctx context.Context, bucket, op, key string, value []byte) func(error) {
	if !tracing.Enabled() {
		return func(error) {}
	}
	type about struct {
		RequestID string `json:"request_id"`
	}
	var v struct {
		about
		Grant    about `json:"grant"`    // a lease
		Decision about `json:"decision"` // a pending record
	}
	if len(value) > 0 && value[0] == '{' {
		_ = json.Unmarshal(value, &v)
	}
	return tracing.StartWrite(ctx, bucket, op, key, cmp.Or(v.RequestID, v.Grant.RequestID, v.Decision.RequestID))
}

func (k mappedKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.Get(ctx, key)
	return e, MapError(err)
}

func (k mappedKV) GetRevision(ctx context.Context, key string, revision uint64) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.GetRevision(ctx, key, revision)
	return e, MapError(err)
}

func (k mappedKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	end := k.trace(ctx, "put", key, value)
	rev, err := k.KeyValue.Put(ctx, key, value)
	end(err)
	return rev, MapError(err)
}

func (k mappedKV) PutString(ctx context.Context, key string, value string) (uint64, error) {
	end := k.trace(ctx, "put", key, []byte(value))
	rev, err := k.KeyValue.PutString(ctx, key, value)
	end(err)
	return rev, MapError(err)
}

func (k mappedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	end := k.trace(ctx, "create", key, value)
	rev, err := k.KeyValue.Create(ctx, key, value, opts...)
	end(err)
	return rev, MapError(err)
}

func (k mappedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	end := k.trace(ctx, "update", key, value)
	rev, err := k.KeyValue.Update(ctx, key, value, revision)
	end(err)
	return rev, MapError(err)
}

func (k mappedKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	end := k.trace(ctx, "delete", key, nil)
	err := k.KeyValue.Delete(ctx, key, opts...)
	end(err)
	return MapError(err)
}

func (k mappedKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	end := k.trace(ctx, "purge", key, nil)
	err := k.KeyValue.Purge(ctx, key, opts...)
	end(err)
	return MapError(err)
}

func (k mappedKV) Keys(ctx context.Context, opts ...jetstream.WatchOpt) ([]string, error) {
	keys, err := k.KeyValue.Keys(ctx, opts...)
	return keys, MapError(err)
}

func (k mappedKV) ListKeys(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	l, err := k.KeyValue.ListKeys(ctx, opts...)
	return l, MapError(err)
}

func (k mappedKV) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	l, err := k.KeyValue.ListKeysFiltered(ctx, filters...)
	return l, MapError(err)
}
