package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
)

// stored is one event of the audit stream, reduced to what the counts need.
type stored struct {
	seq       uint64
	at        time.Time // the broker's timestamp
	published time.Time // the event's own time: when its publisher made it
	typ       string
	requestID string
	grantID   string
	outcome   string // jit.decided
	reason    string // jit.decided, jit.revoked
	expiresAt time.Time
}

// observer is the break-glass administrator's view (a credential made from
// the deployment's keys, as cmd/e2e's helpers do): it follows the grants
// and revocations live for the prober, and reads the whole audit stream.
type observer struct {
	nc   *nats.Conn
	pr   *prober
	subs []*nats.Subscription

	mu      sync.Mutex
	lastEnd time.Time // the latest expires_at of a grant seen live
}

func startObserver(url, dataDir string, pr *prober) (*observer, error) {
	store, err := auth.OpenStore(filepath.Join(dataDir, "keys"))
	if err != nil {
		return nil, err
	}
	is, err := store.Ephemeral(auth.Admin)
	if err != nil {
		return nil, err
	}
	opts, err := is.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("jitchaos observer"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	o := &observer{nc: nc, pr: pr}
	for subj, h := range map[string]nats.MsgHandler{
		broker.LivePrefix + "." + events.TypeGranted + ".>": o.onGranted,
		broker.LivePrefix + "." + events.TypeRevoked + ".>": o.onRevoked,
	} {
		s, err := nc.Subscribe(subj, h)
		if err != nil {
			nc.Close()
			return nil, err
		}
		_ = s.SetPendingLimits(-1, -1)
		o.subs = append(o.subs, s)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return o, nil
}

func (o *observer) onGranted(m *nats.Msg) {
	e, err := broker.FromMsg(m.Header, m.Data)
	if err != nil {
		return
	}
	g, err := events.DataAs[events.Grant](e)
	if err != nil || len(g.Permissions) == 0 {
		return
	}
	o.mu.Lock()
	if g.ExpiresAt.After(o.lastEnd) {
		o.lastEnd = g.ExpiresAt
	}
	o.mu.Unlock()
	o.pr.add(g.GrantID, g.Agent, g.Permissions[0], g.ExpiresAt)
}

func (o *observer) onRevoked(m *nats.Msg) {
	at := time.Now()
	var e struct {
		Data struct {
			GrantID string `json:"grant_id"`
		} `json:"data"`
	}
	if json.Unmarshal(m.Data, &e) != nil {
		return
	}
	o.pr.revoked(e.Data.GrantID, at)
}

func (o *observer) lastExpiry() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastEnd
}

func (o *observer) close() { o.nc.Close() }

// read reads the audit stream from sequence from on, up to its last event
// when the read starts.
func (o *observer) read(ctx context.Context, from uint64) ([]stored, error) {
	var out []stored
	err := broker.ReadDirect(ctx, o.nc, broker.AuditStream, broker.DirectRead{FromSeq: from}, func(m broker.StoredMsg) error {
		out = append(out, reduce(m))
		return nil
	})
	return out, err
}

// reduce decodes what the counts need of a stored event. An event that
// does not decode keeps its sequence, time and type (from its subject).
func reduce(m broker.StoredMsg) stored {
	s := stored{seq: m.Seq, at: m.Time}
	if i := strings.LastIndexByte(m.Subject, '.'); i > 0 {
		s.typ = m.Subject[:i]
	}
	e, err := broker.FromMsg(m.Header, m.Data)
	if err != nil {
		return s
	}
	s.typ, s.published = e.Type(), e.Time()
	var d struct {
		RequestID string    `json:"request_id"`
		GrantID   string    `json:"grant_id"`
		Outcome   string    `json:"outcome"`
		Reason    string    `json:"reason"`
		Code      string    `json:"code"`
		Mode      string    `json:"mode"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	_ = json.Unmarshal(e.Data(), &d)
	s.requestID = events.RequestID(e)
	if s.requestID == "" {
		s.requestID = d.RequestID
	}
	s.grantID, s.outcome, s.reason, s.expiresAt = d.GrantID, d.Outcome, d.Reason, d.ExpiresAt
	switch s.typ {
	case events.TypeRejected:
		s.reason = d.Code
	case events.TypeDecided:
		// How it was reached (expired_before_grant, suspended, …): the
		// reason's text names times and would not group.
		if d.Mode != "" {
			s.reason = d.Mode
		}
	}
	return s
}
