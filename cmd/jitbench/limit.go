package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// limitResult is the broker's own speed on the same server in the same run:
// what the pipeline's figures are set against.
type limitResult struct {
	syncP50, syncP99 float64 // ms per synchronous publish
	syncPerSec       float64
	asyncPerSec      float64
	kvP50, kvP99     float64 // ms per KV put
	kvPerSec         float64
}

// measureLimit publishes n messages of 512 bytes synchronously, 10n
// asynchronously, and puts n KV keys, on a scratch stream and bucket (file
// storage, like the audit stream), then deletes them.
func measureLimit(ctx context.Context, js jetstream.JetStream, n, replicas int) (limitResult, error) {
	var r limitResult
	const stream, bucket = "JITBENCH_LIMIT", "jitbench_limit"
	_ = js.DeleteStream(ctx, stream)
	_ = js.DeleteKeyValue(ctx, bucket)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{"jitbench.limit.>"}, Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return r, fmt.Errorf("create %s: %w", stream, err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), stream)
	payload := make([]byte, 512)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}

	lat := make(dist, 0, n)
	t0 := time.Now()
	for i := range n {
		s := time.Now()
		if _, err := js.Publish(ctx, "jitbench.limit.sync."+strconv.Itoa(i%64), payload); err != nil {
			return r, fmt.Errorf("sync publish: %w", err)
		}
		lat = append(lat, time.Since(s))
	}
	r.syncPerSec = float64(n) / time.Since(t0).Seconds()
	r.syncP50, r.syncP99 = lat.pct(50), lat.pct(99)

	ajs, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return r, err
	}
	an := 10 * n
	t0 = time.Now()
	for i := range an {
		if _, err := ajs.PublishAsync("jitbench.limit.async."+strconv.Itoa(i%64), payload, jetstream.WithStallWait(30*time.Second)); err != nil {
			return r, fmt.Errorf("async publish: %w", err)
		}
	}
	select {
	case <-ajs.PublishAsyncComplete():
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(time.Minute):
		return r, fmt.Errorf("async publishes not acknowledged within a minute")
	}
	r.asyncPerSec = float64(an) / time.Since(t0).Seconds()

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Storage: jetstream.FileStorage, History: 1, Replicas: replicas})
	if err != nil {
		return r, fmt.Errorf("create %s: %w", bucket, err)
	}
	defer js.DeleteKeyValue(context.WithoutCancel(ctx), bucket)
	lat = lat[:0]
	t0 = time.Now()
	for i := range n {
		s := time.Now()
		if _, err := kv.Put(ctx, "k"+strconv.Itoa(i), payload); err != nil {
			return r, fmt.Errorf("kv put: %w", err)
		}
		lat = append(lat, time.Since(s))
	}
	r.kvPerSec = float64(n) / time.Since(t0).Seconds()
	r.kvP50, r.kvP99 = lat.pct(50), lat.pct(99)
	return r, nil
}
