package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
)

// DefaultResync is how often an AgentFeed asks for the agent's events
// besides following them live, so that an event lost on the way (a
// reconnect, a slow consumer) arrives at most this late.
const DefaultResync = 2 * time.Second

// FeedEvent is one event of an agent's feed, with its audit stream sequence.
type FeedEvent struct {
	Seq     uint64
	Subject string
	Event   events.Event
}

// AgentFeed follows one agent's own events (jit.*.<agent>,
// guardrail.*.<agent>) from a stream sequence on, without a consumer: an
// agent may not create one. It listens to the live feed the audit stream
// republishes (LivePrefix), and reads what it may have missed through
// APIEvents, so that every event arrives, once. Events of one subject come
// in stream order; across subjects an event caught up late may follow a
// later one. It is safe for one reader.
type AgentFeed struct {
	nc     *nats.Conn
	agent  string
	from   uint64
	resync time.Duration
	call   func(ctx context.Context, in EventsInput) (EventsPage, error)

	subs []*nats.Subscription
	live chan *nats.Msg

	mu         sync.Mutex
	queue      []FeedEvent
	seen       map[uint64]struct{}
	lastBySubj map[string]uint64
	next       uint64 // every event of the agent before next was delivered
	caught     bool   // the first catch-up was made

	// due is when the next timed catch-up runs, whatever events arrive
	// meanwhile; reconnects is the connection's reconnect count at the last
	// catch-up (a reconnect may have lost live events: catch up at once).
	due        time.Time
	reconnects uint64
}

// FollowAgent starts following agent's events from stream sequence from
// (0: from the next one stored). It subscribes to the live feed before it
// returns, so an event stored afterwards is never missed. call makes an
// APIEvents call (the caller's credential decides whose events it may
// read); resync <= 0 means DefaultResync.
func FollowAgent(ctx context.Context, nc *nats.Conn, agent string, from uint64, resync time.Duration,
	call func(ctx context.Context, in EventsInput) (EventsPage, error)) (*AgentFeed, error) {
	if resync <= 0 {
		resync = DefaultResync
	}
	f := &AgentFeed{nc: nc, agent: agent, from: from, resync: resync, call: call,
		live: make(chan *nats.Msg, 1024), seen: map[uint64]struct{}{}, lastBySubj: map[string]uint64{}, next: from}
	for _, prefix := range []string{"jit", "guardrail"} {
		sub, err := nc.ChanSubscribe(LivePrefix+"."+prefix+".*."+agent, f.live)
		if err != nil {
			f.Stop()
			return nil, fmt.Errorf("follow %s: %w", agent, err)
		}
		f.subs = append(f.subs, sub)
	}
	fctx, cancel := context.WithTimeout(ctx, DefaultAPITimeout)
	defer cancel()
	if err := nc.FlushWithContext(fctx); err != nil {
		f.Stop()
		return nil, fmt.Errorf("follow %s: %w", agent, err)
	}
	return f, nil
}

// SetFrom moves the start of a feed created with from 0 (before the
// request it waits for had a sequence): events before from are not wanted.
func (f *AgentFeed) SetFrom(from uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.from == 0 || from > f.from {
		f.from = from
	}
	if f.next < f.from {
		f.next = f.from
	}
}

// Stop ends the feed.
func (f *AgentFeed) Stop() {
	for _, s := range f.subs {
		_ = s.Unsubscribe()
	}
}

// Next returns the next event, waiting until one arrives or ctx ends. It
// catches up at once the first time, after the connection reconnected, and
// whenever the live feed shows a gap; and in any case every resync
// interval, however many events arrive meanwhile (an event lost on the way
// is not always followed by another of its subject that would show the
// gap). A catch-up that fails (the service restarting) is tried again
// within a quarter second.
func (f *AgentFeed) Next(ctx context.Context) (FeedEvent, error) {
	for {
		f.mu.Lock()
		if len(f.queue) > 0 {
			e := f.queue[0]
			f.queue = f.queue[1:]
			f.mu.Unlock()
			return e, nil
		}
		now := time.Now()
		due := !f.caught || !now.Before(f.due) || f.nc.Stats().Reconnects != f.reconnects
		f.caught = true
		wait := f.due.Sub(now)
		f.mu.Unlock()
		if due {
			if err := f.timedCatchUp(ctx); err != nil {
				return FeedEvent{}, err
			}
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return FeedEvent{}, ctx.Err()
		case m := <-f.live:
			timer.Stop()
			if f.onLive(m) {
				if err := f.timedCatchUp(ctx); err != nil {
					return FeedEvent{}, err
				}
			}
		case <-timer.C:
		}
	}
}

// timedCatchUp catches up and sets when the next timed one is due.
func (f *AgentFeed) timedCatchUp(ctx context.Context) error {
	reconnects := f.nc.Stats().Reconnects
	ok, err := f.catchUp(ctx)
	if err != nil {
		return err
	}
	next := f.resync
	if !ok {
		next = min(next, 250*time.Millisecond)
	}
	f.mu.Lock()
	f.due = time.Now().Add(next)
	if ok {
		f.reconnects = reconnects
	}
	f.mu.Unlock()
	return nil
}

// onLive queues a live event, or reports a gap (an earlier event of the
// same subject that was not seen), which a catch-up fills.
func (f *AgentFeed) onLive(m *nats.Msg) (gap bool) {
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return false
	}
	last, _ := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64)
	subject := strings.TrimPrefix(m.Subject, LivePrefix+".")
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq < f.from || seq < f.next {
		return false
	}
	if _, dup := f.seen[seq]; dup {
		return false
	}
	if last >= f.from && last > f.lastBySubj[subject] {
		if _, ok := f.seen[last]; !ok {
			return true
		}
	}
	e, err := FromMsg(m.Header, m.Data)
	if err != nil {
		return false
	}
	f.deliverLocked(FeedEvent{Seq: seq, Subject: subject, Event: e})
	return false
}

func (f *AgentFeed) deliverLocked(e FeedEvent) {
	if _, dup := f.seen[e.Seq]; dup || e.Seq < f.from || e.Seq < f.next {
		return
	}
	f.seen[e.Seq] = struct{}{}
	if e.Seq > f.lastBySubj[e.Subject] {
		f.lastBySubj[e.Subject] = e.Seq
	}
	f.queue = append(f.queue, e)
}

// catchUp reads the agent's events from next on through the API. ok is
// false when the API did not answer (it is tried again later).
func (f *AgentFeed) catchUp(ctx context.Context) (ok bool, err error) {
	for {
		f.mu.Lock()
		from := max(f.next, f.from, 1)
		f.mu.Unlock()
		page, err := f.call(ctx, EventsInput{FromSeq: from, Agent: f.agent})
		if err != nil {
			var ae *APIError
			if errors.As(err, &ae) && ae.Status < 500 || errors.Is(err, nats.ErrConnectionClosed) {
				return false, err
			}
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, nil // tried again soon
		}
		f.mu.Lock()
		for _, se := range page.Events {
			e, err := events.Decode(se.Event)
			if err != nil {
				continue
			}
			f.deliverLocked(FeedEvent{Seq: se.Seq, Subject: se.Subject, Event: e})
		}
		if page.NextSeq > f.next {
			f.next = page.NextSeq
		}
		// Below next, the watermark tells duplicates apart.
		for s := range f.seen {
			if s < f.next {
				delete(f.seen, s)
			}
		}
		more := page.More && len(page.Events) > 0
		f.mu.Unlock()
		if !more {
			return true, nil
		}
	}
}

// EventsCaller returns the APIEvents call of a connection, with the token
// (empty for agents) and timeout given.
func EventsCaller(nc *nats.Conn, timeout time.Duration) func(ctx context.Context, in EventsInput) (EventsPage, error) {
	return func(ctx context.Context, in EventsInput) (EventsPage, error) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var out EventsPage
		err := Call(cctx, nc, APIEvents, "", in, &out)
		return out, err
	}
}
