package broker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// followInactive is how long the server keeps a follower's consumer after
// its client vanished without cleaning up (a killed process).
const followInactive = 10 * time.Second

// Follow reads the audit stream's messages on filters from stream sequence
// from (0: from the start) with an ordered consumer, which recreates itself
// after a reconnect or a server restart. The returned stop function stops
// reading and deletes the consumer: without that, every follower would stay
// on the stream for the server's default five minutes, and the server matches
// each new message against all of them.
func Follow(ctx context.Context, js jetstream.JetStream, filters []string, from uint64) (jetstream.MessagesContext, func(), error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: followInactive,
	}
	if from == 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverAllPolicy, 0
	}
	cons, err := js.OrderedConsumer(ctx, AuditStream, cfg)
	if err != nil {
		return nil, nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		it.Stop()
		name := cons.CachedInfo().Name
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, AuditStream, name)
	}
	return it, stop, nil
}
