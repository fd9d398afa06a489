package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// historySubjects are the events the history window counts.
var historySubjects = []string{
	events.TypeRequested + ".>",
	events.TypeDecided + ".>",
	events.TypeGranted + ".>",
	events.TypeGuardrailFired + ".>",
}

// maxPerList bounds what one agent's history holds of each kind, so that a
// flood cannot grow memory without limit; counts saturate there.
const maxPerList = 10_000

// reorderSlack is how far out of time order events may arrive and still be
// counted exactly.
const reorderSlack = time.Hour

// History is a per-agent window on the audit stream: the agents' requests,
// denials, grants and guardrail fires of the last 24 hours, each with its
// stream sequence and event time. It is fed in stream order (Follow, or Add
// in tests) and answers Counts deterministically: the same events give the
// same counts.
type History struct {
	mu        sync.Mutex
	agents    map[string]*agentHistory
	last      uint64 // stream sequence of the last event seen
	startLast uint64 // the stream's last sequence when Follow started
	replayed  bool   // Follow has read everything up to startLast
	changed   chan struct{}
	cc        jetstream.ConsumeContext

	// Snapshots (snapshot.go): the bucket, each restored agent's
	// sequence up to which its lists came from the snapshot, and the
	// agents changed since the last save.
	store   jetstream.KeyValue
	through map[string]uint64
	dirty   map[string]struct{}
	// read counts the messages Follow has read from the stream.
	read uint64
}

type stamp struct {
	seq uint64
	at  time.Time
}

type agentHistory struct {
	requests, denials, grants, fires []stamp
}

// NewHistory returns an empty history.
func NewHistory() *History {
	return &History{agents: map[string]*agentHistory{}, changed: make(chan struct{}),
		through: map[string]uint64{}, dirty: map[string]struct{}{}}
}

// Skip records that the message at seq was read but counts for nothing.
func (h *History) Skip(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.advance(seq)
}

// Add records one event read at stream sequence seq on subject, stored by
// the broker at time at; denied says a decision is a denial. Events of other
// types, and decisions other than denials, only advance the sequence.
//
// Times are the broker's (the stream's timestamp), not the events' own
// time attribute: a publisher cannot backdate its requests out of the rate
// limit's window, and requested, granted and guardrail events need no
// decoding at all.
func (h *History) Add(seq uint64, subject string, at time.Time, denied bool) {
	agent := broker.AgentOfSubject(subject)
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.advance(seq)
	if !events.ValidID(agent) || seq <= h.through[agent] {
		// Not an agent's, or already in the snapshot the history started
		// from.
		return
	}
	var list *[]stamp
	a := h.agents[agent]
	if a == nil {
		a = &agentHistory{}
	}
	switch typeOfSubject(subject) {
	case events.TypeRequested:
		list = &a.requests
	case events.TypeGranted:
		list = &a.grants
	case events.TypeGuardrailFired:
		list = &a.fires
	case events.TypeDecided:
		if denied {
			list = &a.denials
		}
	}
	if list == nil {
		return
	}
	h.agents[agent] = a
	*list = push(*list, stamp{seq: seq, at: at})
	h.dirty[agent] = struct{}{}
}

// typeOfSubject is the event type a history subject carries: the subject
// without its last token (jit.requested.<agent> → jit.requested).
func typeOfSubject(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i > 0 {
		return subject[:i]
	}
	return ""
}

// advance records that everything up to seq was seen; h.mu is held.
func (h *History) advance(seq uint64) {
	if seq > h.last {
		h.last = seq
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// push appends st and drops what is older than the window (relative to st)
// or beyond maxPerList.
func push(list []stamp, st stamp) []stamp {
	list = append(list, st)
	cut := 0
	oldest := st.at.Add(-config.HistoryWindow - reorderSlack)
	for cut < len(list) && list[cut].at.Before(oldest) {
		cut++
	}
	cut = max(cut, len(list)-maxPerList)
	if cut > 0 {
		list = append(list[:0], list[cut:]...)
	}
	return list
}

// count counts entries before sequence before with a time in (ref-window,
// ref].
func count(list []stamp, before uint64, ref time.Time, window time.Duration) int {
	from := ref.Add(-window)
	n := 0
	for i := len(list) - 1; i >= 0; i-- {
		st := list[i]
		if st.at.Before(from.Add(-reorderSlack)) {
			break
		}
		if st.seq < before && st.at.After(from) && !st.at.After(ref) {
			n++
		}
	}
	return n
}

// Counts returns agent's history before the event at stream sequence
// before, counted back from ref (the request's time): grants, denials and
// guardrail fires in the 24 hours, requests in the minute and in ratePer
// before it.
func (h *History) Counts(agent string, before uint64, ref time.Time, ratePer time.Duration) Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.agents[agent]
	if a == nil {
		return Counts{}
	}
	c := Counts{
		Grants:             count(a.grants, before, ref, config.HistoryWindow),
		Denials:            count(a.denials, before, ref, config.HistoryWindow),
		GuardrailFires:     count(a.fires, before, ref, config.HistoryWindow),
		RequestsLastMinute: count(a.requests, before, ref, time.Minute),
	}
	if ratePer > 0 {
		c.RequestsInRateWindow = count(a.requests, before, ref, ratePer)
	}
	return c
}

// WaitFor blocks until the history holds every event before stream
// sequence seq, or ctx ends.
func (h *History) WaitFor(ctx context.Context, seq uint64) error {
	for {
		h.mu.Lock()
		ok := seq == 0 || h.last >= seq || (h.replayed && seq <= h.startLast)
		ch := h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("history has not reached stream sequence %d: %w", seq, ctx.Err())
		}
	}
}

// Follow feeds the history from the audit stream with an ordered consumer,
// and keeps it current until Stop. It starts from the snapshot (UseSnapshots)
// and reads the stream after it; without one, or with one it cannot use, it
// reads the stream from 24 hours before now. It returns once the consumer
// runs.
func (h *History) Follow(ctx context.Context, js jetstream.JetStream, now time.Time, log zerolog.Logger) error {
	stream, err := js.Stream(ctx, broker.AuditStream)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	h.mu.Lock()
	// A restarted Follow starts again from the snapshot, or replays the
	// window from scratch.
	h.agents, h.last, h.replayed = map[string]*agentHistory{}, 0, false
	h.through, h.dirty, h.read = map[string]uint64{}, map[string]struct{}{}, 0
	h.startLast = info.State.LastSeq
	kv := h.store
	h.mu.Unlock()
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: historySubjects}
	var from uint64
	if kv != nil {
		if from, err = h.load(ctx, kv, now, info.State.LastSeq); err != nil {
			log.Warn().Err(err).Msg("history snapshot not used; replaying the window")
			from = 0
			h.mu.Lock()
			h.agents, h.last, h.through, h.dirty = map[string]*agentHistory{}, 0, map[string]uint64{}, map[string]struct{}{}
			h.mu.Unlock()
		}
	}
	if from > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
		log.Info().Uint64("from_seq", from+1).Uint64("to_seq", info.State.LastSeq).Msg("history restored from its snapshot")
	} else {
		start := now.Add(-config.HistoryWindow)
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.OrderedConsumer(ctx, broker.AuditStream, cc)
	if err != nil {
		return fmt.Errorf("history consumer: %w", err)
	}
	h.mu.Lock()
	if from >= h.startLast {
		h.replayed = true
	}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		h.replayed = true
	}
	h.mu.Unlock()
	began, caughtUp := time.Now(), from >= info.State.LastSeq
	consumeCtx, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		if !caughtUp && md.Sequence.Stream >= info.State.LastSeq {
			caughtUp = true
			log.Info().Uint64("read", h.Read()+1).Dur("took", time.Since(began)).Uint64("seq", md.Sequence.Stream).Msg("history caught up with the stream")
		}
		h.mu.Lock()
		h.read++ // before take, which makes it visible to WaitFor
		h.mu.Unlock()
		h.take(md.Sequence.Stream, m.Subject(), md.Timestamp, m.Headers(), m.Data())
		if md.NumPending == 0 {
			h.mu.Lock()
			if !h.replayed {
				h.replayed = true
				close(h.changed)
				h.changed = make(chan struct{})
			}
			h.mu.Unlock()
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			log.Warn().Err(err).Msg("history consumer")
		}
	}))
	if err != nil {
		return fmt.Errorf("history consume: %w", err)
	}
	h.mu.Lock()
	h.cc = consumeCtx
	h.mu.Unlock()
	return nil
}

// Read is how many messages Follow has read from the stream since it
// started.
func (h *History) Read() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.read
}

// Stop stops following the stream.
func (h *History) Stop() {
	h.mu.Lock()
	cc := h.cc
	h.cc = nil
	h.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
}

// Replay fills the history with agent's events of the last 24 hours of
// the audit stream, up to its current end (for dry runs: jitctl policy
// explain). It reads with direct gets and creates no consumer, so a
// principal that may only read the stream (an operator) can run it.
func (h *History) Replay(ctx context.Context, js jetstream.JetStream, agent string, now time.Time) error {
	if !events.ValidID(agent) {
		return fmt.Errorf("history: invalid agent id %q", agent)
	}
	// Every subject of the audit stream about agent is <type>.<agent>,
	// a type being two tokens.
	r := broker.DirectRead{Filter: "*.*." + agent, Since: now.Add(-config.HistoryWindow), Prefix: broker.APIPrefixOf(js)}
	err := broker.ReadDirect(ctx, js.Conn(), broker.AuditStream, r, func(m broker.StoredMsg) error {
		h.take(m.Seq, m.Subject, m.Time, m.Header, m.Data)
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// take counts one message of the audit stream.
func (h *History) take(seq uint64, subject string, at time.Time, hdr nats.Header, data []byte) {
	denied := false
	switch typeOfSubject(subject) {
	case events.TypeDecided:
		// Only a decision is read: is it a denial? One that does not
		// decode is the other services' to reject, and counts as none.
		if e, err := broker.FromMsg(hdr, data); err == nil {
			d, err := events.DataAs[events.Decision](e)
			denied = err == nil && d.Outcome == events.OutcomeDenied
		}
	case events.TypeGuardrailFired:
		// A fire counts only if it is one the revoker acts on: a
		// CloudEvent 1.0 of valid data about the agent of its subject.
		// Anything else on the subject is the revoker's to reject.
		if !validFire(hdr, data, subject) {
			h.Skip(seq)
			return
		}
	}
	h.Add(seq, subject, at, denied)
}

// validFire reports whether a message on guardrail.fired.<agent> is a
// guardrail event the revoker acts on.
func validFire(h nats.Header, data []byte, subject string) bool {
	e, err := broker.FromMsg(h, data)
	if err != nil {
		return false
	}
	_, err = broker.DataFor[events.GuardrailFired](e, events.TypeGuardrailFired, subject)
	return err == nil
}
