// Package broker is how the JIT system sits on NATS JetStream: the names of
// its stream, buckets and API subjects, their creation, the adapter that
// carries CloudEvents on NATS messages, a publisher, a consume loop with the
// house ack rules, and the request-reply API's wire types.
package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the audit stream and of the KV buckets.
const (
	// AuditStream holds every event (jit.> and guardrail.>) as a CloudEvent.
	AuditStream = "JIT_AUDIT"
	// BucketGrants holds one key "<agent>.<grant_id>" per grant, created with
	// a per-key TTL that drives expiry revocation.
	BucketGrants = "jit_grants"
	// BucketLeases is the revoker's ledger: one record per grant with its
	// lifecycle state, kept after the grant's TTL so that each grant is
	// revoked exactly once.
	BucketLeases = "jit_leases"
	// BucketSuspensions holds one key per suspended agent.
	BucketSuspensions = "jit_suspensions"
	// BucketPending holds requests waiting for a human, each with a TTL equal
	// to the approval window.
	BucketPending = "jit_pending"
	// BucketConfig holds the active configuration without its secrets:
	// every service and checker reads it.
	BucketConfig = "jit_config"
	// BucketSecrets holds the whole active configuration, approvers' token
	// hashes and notifiers' secrets included: only the approval service
	// reads it.
	BucketSecrets = "jit_secrets"
	// BucketPolicyHistory holds the policy service's snapshots of its
	// history window (one key per agent and a "meta" key), so that a
	// restarted policy reads the audit stream only from its last snapshot
	// on: the policy service's alone.
	BucketPolicyHistory = "jit_policy_history"
)

// PolicyHistoryMaxAge is how long a snapshot key of the policy history
// lives unless rewritten: longer than the 24-hour window and the hour of
// reordering it allows, so that a key that expires holds nothing that still
// counts.
const PolicyHistoryMaxAge = 26 * time.Hour

// AuditSubjects are the subjects the audit stream captures.
var AuditSubjects = []string{"jit.>", "guardrail.>"}

// Options tune the topology for a deployment.
type Options struct {
	// Replicas for the stream and buckets (1 on a single server; 3 in
	// production clusters). Zero creates what is missing with one replica
	// and keeps the replicas of what exists, so that a process started
	// without --replicas never scales a cluster's stream down.
	Replicas int
	// DuplicateWindow is the audit stream's de-duplication window: a
	// republished event with the same id within it is stored once.
	DuplicateWindow time.Duration
	// MarkerTTL is how long TTL expiry markers stay in the grants and pending
	// buckets, so that a revoker that was down sees them when it returns.
	MarkerTTL time.Duration
	// LeaseRetention is how long lease records outlive their last change.
	LeaseRetention time.Duration
	// AuditMaxAge, if set, is how long the audit stream keeps events. Zero
	// keeps the stream's own limits: none when Ensure creates it, and
	// whatever an operator set (nats stream edit) when it exists.
	AuditMaxAge time.Duration
	// Update lets Ensure change the configuration of a stream or bucket
	// that exists (jitd, and the administrator's jitctl creds provision).
	// Without it Ensure only creates what is missing and reports a
	// difference with ErrTopologyDiffers: a service's credential may not
	// update streams, so that a compromised service can neither shorten the
	// audit trail nor make a bucket republish what it holds.
	Update bool
}

// ErrTopologyDiffers is returned (wrapped) by Ensure without Options.Update
// when a stream or bucket exists with another configuration than this
// version's: the system works, and jitd or jitctl creds provision brings
// it up to date.
var ErrTopologyDiffers = errors.New("the stream or bucket exists with another configuration")

// withDefaults fills o's zero fields from DefaultOptions.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = d.DuplicateWindow
	}
	if o.MarkerTTL == 0 {
		o.MarkerTTL = d.MarkerTTL
	}
	if o.LeaseRetention == 0 {
		o.LeaseRetention = d.LeaseRetention
	}
	return o
}

// DefaultOptions suit a single server.
func DefaultOptions() Options {
	return Options{
		Replicas:        1,
		DuplicateWindow: 10 * time.Minute,
		MarkerTTL:       24 * time.Hour,
		LeaseRetention:  7 * 24 * time.Hour,
	}
}

// Ensure creates the audit stream and the buckets that are missing and,
// with o.Update, updates the others to this version's configuration
// (without it, a difference is returned as ErrTopologyDiffers). The audit
// stream's retention limits (max age, bytes, messages) are kept as they are
// unless o.AuditMaxAge is set. It is safe to call from every service at
// start.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) error {
	o = o.withDefaults()
	if o.AuditMaxAge > 0 && o.AuditMaxAge < o.DuplicateWindow {
		return fmt.Errorf("audit max age %s is shorter than the de-duplication window %s", o.AuditMaxAge, o.DuplicateWindow)
	}
	audit := jetstream.StreamConfig{
		Name:        AuditStream,
		Description: "JIT access audit trail: every event as a CloudEvent",
		Subjects:    AuditSubjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    o.Replicas,
		Duplicates:  o.DuplicateWindow,
		MaxMsgSize:  1 << 20,
		AllowDirect: true,
		// Nobody deletes or purges the trail, not even the break-glass
		// credential: once set, the server refuses to unset them.
		DenyDelete: true,
		DenyPurge:  true,
		// Every stored event is republished on jitlive.<subject> with its
		// stream sequence, for clients that may not create consumers.
		RePublish: &jetstream.RePublish{Source: ">", Destination: LivePrefix + ".>"},
	}
	// How long and how much the audit trail keeps is the operator's
	// choice: every service calls Ensure at start and must not undo it.
	switch cur, err := js.Stream(ctx, AuditStream); {
	case err == nil:
		c := cur.CachedInfo().Config
		audit.MaxAge, audit.MaxBytes, audit.MaxMsgs, audit.Discard = c.MaxAge, c.MaxBytes, c.MaxMsgs, c.Discard
		if o.Replicas == 0 {
			audit.Replicas = c.Replicas
		}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		audit.Replicas = max(o.Replicas, 1)
	default:
		return fmt.Errorf("ensure stream %s: %w", AuditStream, err)
	}
	if o.AuditMaxAge > 0 {
		audit.MaxAge = o.AuditMaxAge
	}
	var differs []string
	if d, err := ensureStream(ctx, js, audit, o.Update); err != nil {
		return err
	} else if d != "" {
		differs = append(differs, d)
	}
	// The grants, suspensions and configuration buckets republish every
	// stored change on jitkv.<bucket>.<key>: checkers follow them there.
	republish := func(bucket string) *jetstream.RePublish {
		return &jetstream.RePublish{Source: "$KV." + bucket + ".>", Destination: StatePrefix + "." + bucket + ".>"}
	}
	buckets := []jetstream.KeyValueConfig{
		{Bucket: BucketGrants, Description: "live JIT grants; per-key TTL drives expiry", History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, LimitMarkerTTL: o.MarkerTTL, RePublish: republish(BucketGrants)},
		{Bucket: BucketLeases, Description: "revoker ledger: one record per grant", History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, TTL: o.LeaseRetention},
		{Bucket: BucketSuspensions, Description: "suspended agents", History: 5, Storage: jetstream.FileStorage, Replicas: o.Replicas, RePublish: republish(BucketSuspensions)},
		{Bucket: BucketPending, Description: "requests waiting for a human; per-key TTL is the approval window", History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, LimitMarkerTTL: o.MarkerTTL},
		{Bucket: BucketConfig, Description: "active JIT configuration, without secrets", History: 10, Storage: jetstream.FileStorage, Replicas: o.Replicas, RePublish: republish(BucketConfig)},
		{Bucket: BucketSecrets, Description: "active JIT configuration with approvers' token hashes and notifiers' secrets: the approval service's alone", History: 10, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		{Bucket: BucketPolicyHistory, Description: "the policy service's snapshots of its 24-hour history window", History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas, TTL: PolicyHistoryMaxAge},
	}
	for _, b := range buckets {
		if b.Replicas == 0 {
			var err error
			if b.Replicas, err = currentReplicas(ctx, js, "KV_"+b.Bucket); err != nil {
				return err
			}
		}
		if d, err := ensureBucket(ctx, js, b, o.Update); err != nil {
			return err
		} else if d != "" {
			differs = append(differs, d)
		}
	}
	if len(differs) > 0 {
		return fmt.Errorf("%w: %s; jitd or jitctl creds provision updates them", ErrTopologyDiffers, strings.Join(differs, "; "))
	}
	return nil
}

// currentReplicas is the replicas of stream, or 1 if it does not exist.
func currentReplicas(ctx context.Context, js jetstream.JetStream, stream string) (int, error) {
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ensure stream %s: %w", stream, err)
	}
	return max(st.CachedInfo().Config.Replicas, 1), nil
}

// ensureStream creates the stream of cfg if it is missing; if it exists and
// differs, it updates it when update, or else says how it differs ("" if
// not). An existing stream that does not differ is left alone: on a
// cluster, every node starts at once, and concurrent updates of one stream
// wait for each other until their requests time out.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, update bool) (string, error) {
	cur, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another service created it an instant ago.
			cur, err = js.Stream(ctx, cfg.Name)
		} else if err != nil {
			return "", fmt.Errorf("create stream %s: %w", cfg.Name, err)
		} else {
			return "", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	c := cur.CachedInfo().Config
	d := streamDiff(c, cfg)
	if !update || (d == "" && c.Description == cfg.Description) {
		return d, nil
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return "", fmt.Errorf("update stream %s: %w", cfg.Name, err)
	}
	return "", nil
}

// ensureBucket is ensureStream for a KV bucket.
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, update bool) (string, error) {
	cur, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			cur, err = js.Stream(ctx, "KV_"+cfg.Bucket)
		} else if err != nil {
			return "", fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
		} else {
			return "", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("ensure bucket %s: %w", cfg.Bucket, err)
	}
	c := cur.CachedInfo().Config
	want := jetstream.StreamConfig{Name: c.Name, Subjects: c.Subjects, MaxMsgSize: c.MaxMsgSize, Duplicates: c.Duplicates,
		DenyDelete: c.DenyDelete, DenyPurge: c.DenyPurge, AllowDirect: c.AllowDirect, Replicas: cfg.Replicas,
		MaxMsgsPerSubject: int64(cfg.History), MaxAge: cfg.TTL, SubjectDeleteMarkerTTL: cfg.LimitMarkerTTL, RePublish: cfg.RePublish}
	if want.Replicas == 0 {
		want.Replicas = 1
	}
	d := streamDiff(c, want)
	if !update || (d == "" && c.Description == cfg.Description) {
		return d, nil
	}
	if _, err := js.UpdateKeyValue(ctx, cfg); err != nil {
		return "", fmt.Errorf("update bucket %s: %w", cfg.Bucket, err)
	}
	return "", nil
}

// streamDiff names the fields of cur that differ from want among those this
// system relies on.
func streamDiff(cur, want jetstream.StreamConfig) string {
	var d []string
	if !slices.Equal(cur.Subjects, want.Subjects) {
		d = append(d, "subjects")
	}
	// The server writes "no limit" as -1.
	limit := func(v int64) int64 { return max(v, 0) }
	if limit(int64(cur.MaxMsgSize)) != limit(int64(want.MaxMsgSize)) || cur.Duplicates != want.Duplicates || cur.MaxAge != want.MaxAge ||
		limit(cur.MaxMsgsPerSubject) != limit(want.MaxMsgsPerSubject) || cur.SubjectDeleteMarkerTTL != want.SubjectDeleteMarkerTTL {
		d = append(d, "limits")
	}
	if cur.DenyDelete != want.DenyDelete || cur.DenyPurge != want.DenyPurge || cur.AllowDirect != want.AllowDirect {
		d = append(d, "access")
	}
	if cur.Replicas != want.Replicas {
		d = append(d, "replicas")
	}
	if (cur.RePublish == nil) != (want.RePublish == nil) || (cur.RePublish != nil && *cur.RePublish != *want.RePublish) {
		d = append(d, "republish")
	}
	if len(d) == 0 {
		return ""
	}
	return cur.Name + " (" + strings.Join(d, ", ") + ")"
}

// Buckets are handles to every bucket. Those OpenBuckets returns map the
// library's errors to the broker's (MapKV).
type Buckets struct {
	Grants, Leases, Suspensions, Pending, Config, Secrets jetstream.KeyValue
}

// OpenBuckets binds to the buckets that Ensure created.
func OpenBuckets(ctx context.Context, js jetstream.JetStream) (Buckets, error) {
	var b Buckets
	for name, dst := range map[string]*jetstream.KeyValue{
		BucketGrants: &b.Grants, BucketLeases: &b.Leases, BucketSuspensions: &b.Suspensions,
		BucketPending: &b.Pending, BucketConfig: &b.Config, BucketSecrets: &b.Secrets,
	} {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			return Buckets{}, fmt.Errorf("open bucket %s: %w", name, err)
		}
		*dst = MapKV(kv)
	}
	return b, nil
}

// GrantKey is the grants bucket key of a grant: "<agent>.<grant_id>", so
// that a watch or a permission can be scoped to one agent.
func GrantKey(agent, grantID string) string { return agent + "." + grantID }

// PendingKey is the pending bucket key of a request.
func PendingKey(agent, requestID string) string { return agent + "." + requestID }

// SplitKey splits "<agent>.<id>" keys; ok is false for any other shape.
func SplitKey(key string) (agent, id string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '.' {
			return key[:i], key[i+1:], i > 0 && i < len(key)-1
		}
	}
	return "", "", false
}

// TTLFor returns the per-key TTL that keeps a key until at least deadline:
// whole seconds rounded up, at least one second (the server rounds TTLs down
// to whole seconds).
func TTLFor(deadline, now time.Time) time.Duration {
	d := deadline.Sub(now)
	s := (d + time.Second - 1) / time.Second
	if s < 1 {
		s = 1
	}
	return s * time.Second
}

// EnsureAuditDurable makes sure the audit stream has the durable pull
// consumer name, which a SIEM reader or an operator (auth.Principal's
// AuditDurable) reads with jitctl audit --follow: every event from the
// first, acknowledged one by one. Such principals may read and acknowledge
// it but never create, change or delete a consumer; an existing one is left
// as it is (it holds the reader's position). An empty name does nothing.
func EnsureAuditDurable(ctx context.Context, js jetstream.JetStream, name string) error {
	if name == "" {
		return nil
	}
	_, err := js.Consumer(ctx, AuditStream, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("audit durable %s: %w", name, err)
	}
	_, err = js.CreateConsumer(ctx, AuditStream, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "a reader's position in the audit trail (jitctl audit --follow)",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 10_000,
	})
	if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return fmt.Errorf("create audit durable %s: %w", name, err)
	}
	return nil
}
