package web

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// The console's history of decisions: how each request that waited for a
// human ended (approved, denied, narrowed, timed out, withdrawn, denied for
// a suspension), by whom, when and why, with every approver's vote. It is
// read from the audit stream (jit.decided and jit.approved) by an ordered
// consumer, from the first use of the console on, and kept in memory.
//
// Reads stay bounded and cheap: the catch-up starts at most historyScan
// messages before the end of the audit stream (older decisions are not
// shown after a restart), decisions of the policy alone are skipped by
// their event id without decoding, and at most historyKeep decisions and
// the votes of historyKeep open requests are kept.
const (
	historyScan = 20000
	historyKeep = 500
	// historyCatchUp bounds how long the first page waits for the
	// catch-up; the page shows what was read by then.
	historyCatchUp = 3 * time.Second
)

// DecisionView is how a request that waited for a human ended.
type DecisionView struct {
	RequestID string `json:"request_id"`
	Agent     string `json:"agent"`
	// Outcome is approved or denied; How says more: approved, narrowed,
	// denied, timed out, withdrawn, suspended.
	Outcome string `json:"outcome"`
	How     string `json:"how"`
	// Permissions and DurationMS are what was granted (approved) or asked
	// for (denied); Requested… are what the agent asked for.
	Permissions          []string   `json:"permissions"`
	DurationMS           int64      `json:"duration_ms"`
	RequestedPermissions []string   `json:"requested_permissions"`
	RequestedDurationMS  int64      `json:"requested_duration_ms"`
	Reason               string     `json:"reason"`     // the agent's reason for asking
	Why                  string     `json:"why"`        // the decision's reason
	Comment              string     `json:"comment"`    // the deciding approver's comment
	DecidedBy            string     `json:"decided_by"` // approver names, "nobody", or who ended it
	DecidedAt            time.Time  `json:"decided_at"`
	Votes                []VoteView `json:"votes,omitempty"`
}

// VoteView is one approver's approval of a request.
type VoteView struct {
	Approver    string    `json:"approver"`
	Permissions []string  `json:"permissions"`
	DurationMS  int64     `json:"duration_ms"`
	Comment     string    `json:"comment,omitempty"`
	At          time.Time `json:"at"`
}

// Ways a request ended, as DecisionView.How says them.
const (
	howApproved  = "approved"
	howNarrowed  = "narrowed"
	howDenied    = "denied"
	howTimedOut  = "timed out"
	howWithdrawn = "withdrawn"
	howSuspended = "suspended"
	howExpired   = "expired before the grant"
)

// history is the in-memory record the console shows. Its zero value is
// not usable; see newHistory.
type history struct {
	w *Console

	once    sync.Once
	started atomic.Bool
	ready   chan struct{} // closed when the catch-up is done (or failed)
	done    chan struct{} // closed when run returns
	notify  func()        // called after each new decision (the live pages)

	mu        sync.Mutex
	decisions map[string]*DecisionView
	order     []string              // request ids of decisions, oldest first
	votes     map[string][]VoteView // votes of requests not decided yet
	voteOrder []string
}

func newHistory(w *Console) *history {
	return &history{w: w, ready: make(chan struct{}), done: make(chan struct{}),
		decisions: map[string]*DecisionView{}, votes: map[string][]VoteView{}}
}

// wait returns once the reading started by ensure has stopped (the
// console closed); at once if it never started.
func (h *history) wait() {
	if h.started.Load() {
		<-h.done
	}
}

// ensure starts reading the stream on first use and waits, at most until
// ctx ends or historyCatchUp, for the catch-up. Later calls return at once.
func (h *history) ensure(ctx context.Context) {
	h.once.Do(func() {
		h.started.Store(true)
		go h.run()
	})
	t := time.NewTimer(historyCatchUp)
	defer t.Stop()
	select {
	case <-h.ready:
	case <-ctx.Done():
	case <-t.C:
	}
}

// run follows the stream until the console closes.
func (h *history) run() {
	defer close(h.done)
	w := h.w
	ctx := w.ctx
	readyOnce := sync.OnceFunc(func() { close(h.ready) })
	defer readyOnce()
	it, stop, pending, err := h.follow(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("console: read the decision history; the console shows none")
		}
		return
	}
	defer stop()
	if pending == 0 {
		readyOnce()
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() == nil {
				w.log.Error().Err(err).Msg("console: the decision history stopped")
			}
			return
		}
		if h.add(m.Headers().Get(jetstream.MsgIDHeader), m) && h.notify != nil {
			h.notify()
		}
		if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
			readyOnce()
		}
	}
}

// follow opens an ordered consumer on the decisions and approvals of the
// audit stream, from historyScan messages before its end, and says how
// many messages it has to catch up on.
func (h *history) follow(ctx context.Context) (jetstream.MessagesContext, func(), uint64, error) {
	js := h.w.d.JS
	st, err := js.Stream(ctx, broker.AuditStream)
	if err != nil {
		return nil, nil, 0, err
	}
	info := st.CachedInfo()
	from := info.State.FirstSeq
	if last := info.State.LastSeq; last > historyScan && last-historyScan+1 > from {
		from = last - historyScan + 1
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{events.TypeDecided + ".>", events.TypeApproved + ".>"},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(from, 1),
		InactiveThreshold: 10 * time.Second,
	}
	cons, err := js.OrderedConsumer(ctx, broker.AuditStream, cfg)
	if err != nil {
		return nil, nil, 0, err
	}
	var pending uint64
	if ci := cons.CachedInfo(); ci != nil {
		pending = ci.NumPending
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, nil, 0, err
	}
	// Stopping leaves the consumer to the server, which removes it
	// InactiveThreshold after the last pull: the approval service may not
	// delete a consumer of the audit stream (docs/security.md), and asking
	// would only wait out a denied request and log a permissions violation.
	stop := it.Stop
	return it, stop, pending, nil
}

// add records one message; it reports whether a decision was added.
func (h *history) add(id string, m jetstream.Msg) bool {
	// Decisions of the policy alone (<request_id>/policy) are most of the
	// stream and never shown: skip them before decoding.
	if strings.HasSuffix(id, "/policy") {
		return false
	}
	e, err := broker.FromMsg(m.Headers(), m.Data())
	if err != nil {
		return false
	}
	switch e.Type() {
	case events.TypeApproved:
		a, err := events.DataAs[events.Approval](e)
		if err != nil {
			return false
		}
		h.addVote(a)
		return false
	case events.TypeDecided:
		d, err := events.DataAs[events.Decision](e)
		if err != nil || !waitedForHuman(d) {
			return false
		}
		h.addDecision(d)
		return true
	}
	return false
}

// waitedForHuman says whether d ends a request that waited for an
// approver.
func waitedForHuman(d events.Decision) bool {
	switch d.Mode {
	case events.ModeHuman, events.ModeTimeout, events.ModeWithdrawn:
		return true
	case events.ModeSuspended, events.ModeExpiredBeforeGrant:
		return len(d.ApproverRoles) > 0
	}
	return false
}

func (h *history) addVote(a events.Approval) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := VoteView{Approver: a.Approver.ID, Permissions: a.Permissions, DurationMS: a.DurationMS, Comment: a.Comment, At: a.ApprovedAt}
	if d, ok := h.decisions[a.RequestID]; ok {
		// The decision was read first (a vote republished after a restart).
		if !slices.ContainsFunc(d.Votes, func(x VoteView) bool { return x.Approver == v.Approver }) {
			d.Votes = append(d.Votes, v)
			d.nameApprovers()
		}
		return
	}
	vs, ok := h.votes[a.RequestID]
	if slices.ContainsFunc(vs, func(x VoteView) bool { return x.Approver == v.Approver }) {
		return
	}
	h.votes[a.RequestID] = append(vs, v)
	if !ok {
		h.voteOrder = append(h.voteOrder, a.RequestID)
		for len(h.voteOrder) > historyKeep {
			delete(h.votes, h.voteOrder[0])
			h.voteOrder = h.voteOrder[1:]
		}
	}
}

func (h *history) addDecision(d events.Decision) {
	v := &DecisionView{
		RequestID: d.RequestID, Agent: d.Agent, Outcome: d.Outcome,
		Permissions: d.Permissions, DurationMS: d.DurationMS,
		RequestedPermissions: d.Request.Permissions, RequestedDurationMS: d.Request.DurationMS,
		Reason: d.Request.Reason, Why: d.Reason, Comment: d.Comment, DecidedAt: d.DecidedAt,
	}
	if len(v.RequestedPermissions) == 0 {
		v.RequestedPermissions, v.RequestedDurationMS = d.Permissions, d.DurationMS
	}
	switch {
	case d.Mode == events.ModeTimeout:
		v.How, v.DecidedBy = howTimedOut, "nobody"
	case d.Mode == events.ModeWithdrawn:
		v.How, v.DecidedBy = howWithdrawn, d.Agent
	case d.Mode == events.ModeSuspended:
		v.How, v.DecidedBy = howSuspended, actorName(d.DecidedBy)
	case d.Mode == events.ModeExpiredBeforeGrant:
		v.How, v.DecidedBy = howExpired, actorName(d.DecidedBy)
	case d.Outcome == events.OutcomeApproved:
		v.How, v.DecidedBy = howApproved, d.DecidedBy.ID
		if len(d.Permissions) < len(v.RequestedPermissions) || d.DurationMS < v.RequestedDurationMS {
			v.How = howNarrowed
		}
	default:
		v.How, v.DecidedBy = howDenied, d.DecidedBy.ID
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.decisions[d.RequestID]; ok {
		v.Votes = old.Votes
	} else {
		h.order = append(h.order, d.RequestID)
	}
	if vs, ok := h.votes[d.RequestID]; ok {
		v.Votes = vs
		delete(h.votes, d.RequestID)
		h.voteOrder = slices.DeleteFunc(h.voteOrder, func(id string) bool { return id == d.RequestID })
	}
	v.nameApprovers()
	h.decisions[d.RequestID] = v
	for len(h.order) > historyKeep {
		delete(h.decisions, h.order[0])
		h.order = h.order[1:]
	}
}

// nameApprovers names every approver of an approval that needed several.
func (d *DecisionView) nameApprovers() {
	if d.Outcome != events.OutcomeApproved || len(d.Votes) < 2 {
		return
	}
	names := make([]string, len(d.Votes))
	for i, vt := range d.Votes {
		names[i] = vt.Approver
	}
	d.DecidedBy = strings.Join(names, " and ")
}

// actorName is how the console names who caused something.
func actorName(a events.Actor) string {
	switch a.Kind {
	case events.ActorGuardrail:
		return "guardrail " + a.ID
	case events.ActorSystem, "":
		return "the system"
	}
	return a.ID
}

// decision returns the decision of request id, if it is in the history.
func (h *history) decision(id string) (DecisionView, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.decisions[id]
	if !ok {
		return DecisionView{}, false
	}
	out := *d
	out.Votes = slices.Clone(d.Votes)
	return out, true
}

// recent returns the decisions of the last day, newest first, at most n.
func (h *history) recent(now time.Time, n int) []DecisionView {
	h.mu.Lock()
	defer h.mu.Unlock()
	since := now.Add(-recentWindow)
	out := []DecisionView{}
	for i := len(h.order) - 1; i >= 0 && len(out) < n; i-- {
		d := h.decisions[h.order[i]]
		if d.DecidedAt.Before(since) {
			continue
		}
		c := *d
		c.Votes = slices.Clone(d.Votes)
		out = append(out, c)
	}
	// Stream order is decision order nearly always; sort to be sure.
	slices.SortStableFunc(out, func(a, b DecisionView) int { return b.DecidedAt.Compare(a.DecidedAt) })
	return out
}
