package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrTargetHasData is returned (wrapped) by CheckMigrationTarget and
// Migrate when a stream of the topology exists where the data is to go and
// holds, or once held, messages, or has consumers: a migration never
// replaces anything that may be someone's data.
var ErrTargetHasData = errors.New("the stream exists there with data")

// MigrateOptions tune Migrate.
type MigrateOptions struct {
	// Replicas the streams are moved to once restored (SetStreamReplicas);
	// zero leaves them at the source's.
	Replicas int
	// Dir is where the snapshots are kept between the source and the
	// target (removed when Migrate returns); empty: os.TempDir(). It needs
	// about the size of the source's store, compressed.
	Dir string
}

// Migration is what Migrate did.
type Migration struct {
	Streams []MigratedStream `json:"streams"`
	// Absent are the streams of the topology that the source does not
	// have (an older version's): jitd creates them at its next start.
	Absent []string `json:"absent,omitempty"`
	// Left are the source's streams outside the topology: not moved.
	Left []string `json:"left,omitempty"`
}

// MigratedStream is one stream Migrate moved.
type MigratedStream struct {
	Stream string `json:"stream"`
	// Messages, FirstSeq and LastSeq are the source's, as snapshotted:
	// the target has the same messages at the same sequences.
	Messages uint64 `json:"messages"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Durables are the stream's durable consumers, moved with their
	// delivered and acknowledged positions.
	Durables []string `json:"durables,omitempty"`
	Replicas int      `json:"replicas"`
	Leader   string   `json:"leader,omitempty"`
}

// CheckMigrationTarget reads the topology's streams where js points and
// returns those that exist but are pristine (no message ever stored, no
// consumer: what Migrate replaces). A stream with data (messages, a last
// sequence above zero, or consumers) makes it return an error wrapping
// ErrTargetHasData that names each such stream and what it holds. It
// changes nothing.
func CheckMigrationTarget(ctx context.Context, js jetstream.JetStream) (pristine []string, err error) {
	var busy []string
	for _, name := range Streams() {
		st, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		s := st.CachedInfo().State
		if s.Msgs == 0 && s.LastSeq == 0 && s.Consumers == 0 {
			pristine = append(pristine, name)
			continue
		}
		busy = append(busy, fmt.Sprintf("%s (%d messages, last sequence %d, %d consumers)", name, s.Msgs, s.LastSeq, s.Consumers))
	}
	if len(busy) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrTargetHasData, strings.Join(busy, ", "))
	}
	return pristine, nil
}

// Migrate copies the topology's streams (the audit stream and every
// bucket) from the JetStream of from to that of to, with JetStream's
// snapshot and restore: every message at its sequence with its headers (a
// KV key keeps its TTL, counted from when it was written), and every
// consumer with its positions. Both connections need the right to
// snapshot, create and delete streams (the administrator's).
//
// It refuses, before it reads anything, when the target has data
// (CheckMigrationTarget: an error wrapping ErrTargetHasData); pristine
// streams there are replaced. It snapshots every stream first, then
// restores them one by one and waits for each one's durable consumers; if
// a restore fails, it removes the streams it restored, leaving the target
// as it found it but for the pristine streams. Then it moves the restored
// streams to o.Replicas (SetStreamReplicas): an error there leaves every
// stream restored, and jitctl topology replicas continues. The source is
// read, never changed, by Migrate; the migration is returned with any
// error.
func Migrate(ctx context.Context, from, to *nats.Conn, o MigrateOptions) (Migration, error) {
	var m Migration
	fromJS, err := jetstream.New(from)
	if err != nil {
		return m, err
	}
	toJS, err := jetstream.New(to)
	if err != nil {
		return m, err
	}
	pristine, err := CheckMigrationTarget(ctx, toJS)
	if err != nil {
		return m, err
	}
	have := map[string]bool{}
	names := fromJS.StreamNames(ctx)
	for n := range names.Name() {
		have[n] = true
	}
	if err := names.Err(); err != nil {
		return m, fmt.Errorf("the source's streams: %w", err)
	}
	var plan []string
	for _, n := range Streams() {
		if have[n] {
			plan = append(plan, n)
			delete(have, n)
		} else {
			m.Absent = append(m.Absent, n)
		}
	}
	for n := range have {
		m.Left = append(m.Left, n)
	}
	slices.Sort(m.Left)

	// Every snapshot first: a source that cannot be read leaves the target
	// untouched.
	dir, err := os.MkdirTemp(o.Dir, "jit-migrate-")
	if err != nil {
		return m, fmt.Errorf("a directory for the snapshots: %w", err)
	}
	defer os.RemoveAll(dir)
	snaps := make([]Snapshot, len(plan))
	files := make([]string, len(plan))
	durables := make([][]string, len(plan))
	for i, name := range plan {
		if durables[i], err = durablesOf(ctx, fromJS, name); err != nil {
			return m, err
		}
		f, err := os.CreateTemp(dir, name+"-*.snapshot")
		if err != nil {
			return m, err
		}
		files[i] = f.Name()
		snaps[i], err = SnapshotStream(ctx, from, name, f)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("snapshot %s: %w", name, cerr)
		}
		if err != nil {
			return m, err
		}
	}

	var restored []string
	rollback := func(cause error) error {
		// On its own clock: ctx may be what ended.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var errs []error
		for _, name := range restored {
			if err := toJS.DeleteStream(rctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				errs = append(errs, fmt.Errorf("remove %s again: %w", name, err))
			}
		}
		if len(errs) > 0 {
			return errors.Join(append([]error{cause}, errs...)...)
		}
		return fmt.Errorf("%w (every stream this run restored was removed again)", cause)
	}
	for i, name := range plan {
		if slices.Contains(pristine, name) {
			if err := toJS.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return m, rollback(fmt.Errorf("replace the empty %s: %w", name, err))
			}
		}
		f, err := os.Open(files[i])
		if err != nil {
			return m, rollback(err)
		}
		_, err = RestoreStream(ctx, to, snaps[i], f)
		_ = f.Close()
		if errors.Is(err, ErrStreamExists) {
			// Made by someone else since the check: theirs, not removed.
			return m, rollback(fmt.Errorf("%w: %w", ErrTargetHasData, err))
		}
		// Counted even when it failed: a restore cut short may leave the
		// stream behind.
		restored = append(restored, name)
		if err == nil {
			err = waitConsumers(ctx, toJS, name, durables[i])
		}
		if err != nil {
			return m, rollback(err)
		}
		s := snaps[i]
		m.Streams = append(m.Streams, MigratedStream{Stream: name, Messages: s.Messages, FirstSeq: s.FirstSeq, LastSeq: s.LastSeq, Durables: durables[i]})
	}

	if o.Replicas == 0 {
		for i := range m.Streams {
			st, err := toJS.Stream(ctx, m.Streams[i].Stream)
			if err != nil {
				return m, err
			}
			m.Streams[i].Replicas = max(st.CachedInfo().Config.Replicas, 1)
		}
		return m, nil
	}
	changes, err := SetStreamReplicas(ctx, toJS, o.Replicas, restored)
	for i, c := range changes {
		m.Streams[i].Replicas, m.Streams[i].Leader = c.To, c.Leader
	}
	if err != nil {
		return m, fmt.Errorf("every stream is restored, but not every one at %d replicas (jitctl topology replicas %d continues): %w", o.Replicas, o.Replicas, err)
	}
	return m, nil
}

// durablesOf names stream's durable consumers.
func durablesOf(ctx context.Context, js jetstream.JetStream, stream string) ([]string, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	var out []string
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Config.Durable != "" {
			out = append(out, ci.Name)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("consumers of %s: %w", stream, err)
	}
	slices.Sort(out)
	return out, nil
}

// waitConsumers polls until every one of names is a consumer of stream: on
// a cluster a restored stream's consumers are assigned after the restore
// has answered.
func waitConsumers(ctx context.Context, js jetstream.JetStream, stream string, names []string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := ""
		for _, n := range names {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.Consumer(cctx, stream, n)
			cancel()
			if err != nil {
				missing = n
				break
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restore %s: its consumer %s did not appear: %w", stream, missing, ctx.Err())
		case <-tick.C:
		}
	}
}
