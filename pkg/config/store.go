package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ActiveKey is the key of the active configuration in the config bucket.
const ActiveKey = "active"

// Digest returns a short, stable digest of the configuration's canonical
// form, used to tell versions apart in logs and audit events.
func (c *Config) Digest() string {
	if c.FullDigest != "" {
		return c.FullDigest
	}
	sum := sha256.Sum256(c.JSON())
	return hex.EncodeToString(sum[:8])
}

// Public returns the configuration as every service and checker may read
// it: approvers' token hashes and notifiers' URLs and secrets blanked,
// Redacted set, and the whole configuration's digest kept.
func (c *Config) Public() *Config {
	if c.Redacted {
		return c
	}
	p := *c
	p.Approvers = slices.Clone(c.Approvers)
	for i := range p.Approvers {
		p.Approvers[i].TokenSHA256 = ""
	}
	p.Notifiers = slices.Clone(c.Notifiers)
	for i := range p.Notifiers {
		p.Notifiers[i].URL, p.Notifiers[i].Secret = "", ""
	}
	p.Redacted, p.FullDigest = true, c.Digest()
	// Decode the stored form, so that nothing of the whole configuration
	// (its indexes point at the secrets) stays behind.
	out, err := FromJSON(p.JSON())
	if err != nil {
		panic(fmt.Sprintf("config: redacted copy does not validate: %v", err))
	}
	return out
}

// Buckets are where a configuration is stored: the redacted copy in the
// config bucket, the whole of it in the secrets bucket.
type Buckets struct {
	Config, Secrets jetstream.KeyValue
}

// ApplyWithSecrets stores c whole in b.Secrets, then its redacted copy in
// b.Config (Apply), so that a reader of the public copy never sees a
// version whose secrets the approval service lacks. It returns the revision
// of the public copy and whether anything changed.
//
// The writer need not read the secrets bucket (the policy service may not):
// the redacted copy carries the whole configuration's digest, so an
// identical configuration is recognised there and nothing is written.
func ApplyWithSecrets(ctx context.Context, b Buckets, c *Config) (rev uint64, changed bool, err error) {
	if c.Redacted {
		return 0, false, fmt.Errorf("%w: a redacted configuration has no secrets to store", ErrInvalid)
	}
	want := c.Public().JSON()
	if cur, err := b.Config.Get(ctx, ActiveKey); err == nil && bytes.Equal(cur.Value(), want) {
		return cur.Revision(), false, nil
	}
	if _, err := b.Secrets.Put(ctx, ActiveKey, c.JSON()); err != nil {
		return 0, false, fmt.Errorf("store secrets: %w", err)
	}
	return put(ctx, b.Config, want)
}

// Apply stores c's redacted copy (Public) as the active configuration in
// kv, the config bucket, unless the active one is already identical. It returns the revision now active and whether it
// changed. Concurrent Apply calls of the same configuration (several
// services started with one file) converge without error.
func Apply(ctx context.Context, kv jetstream.KeyValue, c *Config) (rev uint64, changed bool, err error) {
	return put(ctx, kv, c.Public().JSON())
}

// put stores want under ActiveKey unless it is there already.
func put(ctx context.Context, kv jetstream.KeyValue, want []byte) (rev uint64, changed bool, err error) {
	kv = broker.MapKV(kv)
	for range 5 {
		cur, err := kv.Get(ctx, ActiveKey)
		switch {
		case errors.Is(err, broker.ErrNotFound):
			rev, err = kv.Create(ctx, ActiveKey, want)
		case err != nil:
			return 0, false, fmt.Errorf("read active configuration: %w", err)
		case bytes.Equal(cur.Value(), want):
			return cur.Revision(), false, nil
		default:
			rev, err = kv.Update(ctx, ActiveKey, want, cur.Revision())
		}
		if err == nil {
			return rev, true, nil
		}
		if !errors.Is(err, broker.ErrConflict) {
			return 0, false, fmt.Errorf("store configuration: %w", err)
		}
		// Lost a race with another writer: read again.
	}
	return 0, false, fmt.Errorf("store configuration: too many concurrent writers")
}

// Source holds the active configuration, kept current by a KV watch. A
// stored configuration that fails validation is logged and ignored: the
// last good one stays active.
type Source struct {
	cur atomic.Pointer[Config]
	rev atomic.Uint64
}

// Static returns a Source that always holds c (for tests and tools).
func Static(c *Config) *Source {
	s := &Source{}
	s.cur.Store(c)
	return s
}

// Current returns the active configuration. It never returns nil for a
// Source returned by Watch or Static.
func (s *Source) Current() *Config { return s.cur.Load() }

// Revision returns the KV revision of the active configuration.
func (s *Source) Revision() uint64 { return s.rev.Load() }

// Watch follows the active configuration in kv. It blocks until a valid
// configuration is present (or ctx ends), then keeps the Source current in
// the background until ctx ends. It follows the bucket with
// broker.WatchBucket: if the watch ends, it watches again with a backoff,
// and the last good configuration stays active meanwhile (a configuration
// changes only by an explicit, audited apply; a service without one could
// not answer at all).
func Watch(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger) (*Source, error) {
	s := &Source{}
	ready := make(chan struct{})
	var once sync.Once
	w, err := broker.WatchBucket(ctx, kv, []string{ActiveKey}, broker.WatchHandler{
		Entry: func(e jetstream.KeyValueEntry, _ bool) {
			if e.Operation() != jetstream.KeyValuePut {
				return
			}
			if e.Revision() <= s.rev.Load() {
				return // the same value again, from a new watch
			}
			c, err := FromJSON(e.Value())
			if err != nil {
				log.Error().Err(err).Uint64("revision", e.Revision()).Msg("ignoring invalid stored configuration; keeping the last good one")
				return
			}
			s.cur.Store(c)
			s.rev.Store(e.Revision())
			log.Info().Str("bucket", kv.Bucket()).Uint64("revision", e.Revision()).Str("digest", c.Digest()).Msg("configuration active")
			once.Do(func() { close(ready) })
		},
		Lost: func() {
			log.Warn().Str("bucket", kv.Bucket()).Msg("configuration watch ended; keeping the active configuration until it runs again")
		},
	}, log)
	if err != nil {
		return nil, fmt.Errorf("watch configuration: %w", err)
	}
	go func() {
		<-ctx.Done()
		w.Stop()
	}()
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a configuration in the config bucket: %w", ctx.Err())
	}
}

// Follow keeps a Source current with the redacted configuration in the
// config bucket without a consumer (a checker or an operator may not create
// one): it reads the bucket through js's API prefix and follows the changes
// the bucket republishes. It blocks until a valid configuration is present
// (or ctx ends), then follows until ctx ends.
func Follow(ctx context.Context, js jetstream.JetStream, log zerolog.Logger) (*Source, error) {
	s := &Source{}
	ready := make(chan struct{})
	var once sync.Once
	apply := func(c broker.KVChange) {
		if c.Key != ActiveKey || c.Op != jetstream.KeyValuePut {
			return
		}
		cfg, err := FromJSON(c.Value)
		if err != nil {
			log.Error().Err(err).Uint64("revision", c.Seq).Msg("ignoring invalid stored configuration; keeping the last good one")
			return
		}
		s.cur.Store(cfg)
		s.rev.Store(c.Seq)
		once.Do(func() { close(ready) })
	}
	f, err := broker.FollowKeys(ctx, js.Conn(), broker.APIPrefixOf(js), broker.BucketConfig, []string{ActiveKey}, apply)
	if err != nil {
		return nil, fmt.Errorf("follow configuration: %w", err)
	}
	go func() {
		<-ctx.Done()
		f.Stop()
	}()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = f.Check(ctx)
			}
		}
	}()
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		f.Stop()
		return nil, fmt.Errorf("waiting for a configuration in the config bucket: %w", ctx.Err())
	}
}
