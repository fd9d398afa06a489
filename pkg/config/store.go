package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ActiveKey is the key of the active configuration in the config bucket.
const ActiveKey = "active"

// Digest returns a short, stable digest of the configuration's canonical
// form, used to tell versions apart in logs and audit events.
func (c *Config) Digest() string {
	sum := sha256.Sum256(c.JSON())
	return hex.EncodeToString(sum[:8])
}

// Apply stores c as the active configuration in kv unless the active one is
// already identical. It returns the revision now active and whether it
// changed. Concurrent Apply calls of the same configuration (several
// services started with one file) converge without error.
func Apply(ctx context.Context, kv jetstream.KeyValue, c *Config) (rev uint64, changed bool, err error) {
	want := c.JSON()
	for range 5 {
		cur, err := kv.Get(ctx, ActiveKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
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
		if !errors.Is(err, jetstream.ErrKeyExists) {
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
// the background until ctx ends.
func Watch(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger) (*Source, error) {
	w, err := kv.Watch(ctx, ActiveKey)
	if err != nil {
		return nil, fmt.Errorf("watch configuration: %w", err)
	}
	s := &Source{}
	ready := make(chan struct{})
	var once bool
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				c, err := FromJSON(e.Value())
				if err != nil {
					log.Error().Err(err).Uint64("revision", e.Revision()).Msg("ignoring invalid stored configuration; keeping the last good one")
					continue
				}
				s.cur.Store(c)
				s.rev.Store(e.Revision())
				log.Info().Uint64("revision", e.Revision()).Str("digest", c.Digest()).Msg("configuration active")
				if !once {
					once = true
					close(ready)
				}
			}
		}
	}()
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a configuration in the config bucket: %w", ctx.Err())
	}
}
