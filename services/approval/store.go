package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// pendingStream is the stream behind the pending bucket: its TTL markers
// time requests out.
const pendingStream = "KV_" + broker.BucketPending

// pendingSubjectPrefix prefixes every key of the pending bucket on its stream.
const pendingSubjectPrefix = "$KV." + broker.BucketPending + "."

// pendingRecord is the value of a key in the pending bucket: events.Pending
// plus, once a human (or a suspension) has answered, the answer.
//
// Answering is three steps: write the answer into the record by
// compare-and-set (an Update, which also drops the key's TTL so the request
// can no longer time out), publish it, delete the key. The compare-and-set
// picks the one winner; a crash after it leaves an answered record that
// Start publishes and deletes, so an answer is never lost between deleting
// the key and publishing the decision.
type pendingRecord struct {
	events.Pending
	// Answer is the jit.decided data that ends the request.
	Answer *events.Decision `json:"answer,omitempty"`
	// AnswerID is the event id Answer is published with.
	AnswerID string `json:"answer_id,omitempty"`
	// Votes are the approvals recorded so far, one per distinct approver,
	// when the rule needs more than one. Each vote is written by
	// compare-and-set with the key's TTL kept, so a partly approved request
	// still times out.
	Votes []vote `json:"votes,omitempty"`
	// Required is how many approvals the request needs (0 means 1).
	Required int `json:"required,omitempty"`
}

// pendingEntry is one key of the pending bucket, read with its revision.
type pendingEntry struct {
	key string
	rev uint64
	rec pendingRecord
}

// pendingEntries reads every live key of the pending bucket matching filter
// ("*.<request_id>" or ">"), values included, in one pass. Deleted and
// expired keys are skipped. A value that does not decode is set aside: it
// is reported once (jit.rejected, stage record) and skipped, so that one
// bad record never stops a start or hides the others.
func (s *Service) pendingEntries(ctx context.Context, filter string) ([]pendingEntry, error) {
	w, err := s.d.Buckets.Pending.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read pending %s: %w", filter, err)
	}
	defer func() { _ = w.Stop() }()
	var out []pendingEntry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read pending %s: %w", filter, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read pending %s: watcher closed", filter)
			}
			if e == nil {
				return out, nil
			}
			var rec pendingRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil || !events.ValidID(rec.Decision.RequestID) {
				if err == nil {
					err = errors.New("no valid request_id")
				}
				s.log.Error().Err(err).Str("key", e.Key()).Uint64("revision", e.Revision()).Msg("pending record does not decode; set aside")
				if rerr := s.pub.RejectRecord(ctx, broker.BucketPending, e.Key(), e.Revision(), err); rerr != nil {
					s.log.Error().Err(rerr).Str("key", e.Key()).Msg("could not report the record set aside")
				}
				continue
			}
			out = append(out, pendingEntry{key: e.Key(), rev: e.Revision(), rec: rec})
		}
	}
}

// everPending reports what the pending bucket's stream holds for key: no
// message (never stored, or not yet), a live record (its last message is a
// put, possibly written after the caller's snapshot of live records), or an
// answer's delete marker or a time-out marker (ended).
func (s *Service) everPending(ctx context.Context, key string) (pendingHistory, error) {
	m, err := s.pendingStream.GetLastMsgForSubject(ctx, pendingSubjectPrefix+key)
	switch err = broker.MapError(err); {
	case errors.Is(err, broker.ErrNotFound):
		return neverPending, nil
	case err != nil:
		return neverPending, fmt.Errorf("read pending history of %s: %w", key, err)
	case m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "":
		return pendingEnded, nil
	default:
		// A record written after the caller's snapshot of live records.
		return pendingLive, nil
	}
}

// pendingHistory is what the pending bucket's stream says of one request.
type pendingHistory int

const (
	neverPending pendingHistory = iota // no message: not stored (yet)
	pendingLive                        // its last message is a live record
	pendingEnded                       // deleted (answered) or expired (timed out)
)
