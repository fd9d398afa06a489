package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// client is an agent-side view of the pipeline: it sends requests and
// learns of their grants, denials and revocations from core NATS
// subscriptions on the audit subjects (a core subscriber sees every event
// JetStream stores, as it is published).
type client struct {
	// nc is the observer's connection: the administrator's in the
	// services' account (every event as published, the bulk KV writes and
	// the limit measurement), or a plain one without authentication.
	nc *nats.Conn
	js jetstream.JetStream
	// creds is the credentials directory (jitd's <data-dir>/creds); empty
	// without authentication.
	creds string
	// agentURL is where agents connect: nc's server, or the URLs of every
	// node of a cluster (each agent's connection picks one at random).
	agentURL string

	agentsMu sync.Mutex
	agents   map[string]*nats.Conn // an agent's own connection, for its requests

	mu      sync.Mutex
	waiting map[string]chan outcome // id suffix (after "req_"/"grt_") → waiter
	revoked map[string]revocation   // grant id → its jit.revoked
	notify  chan struct{}           // poked on every revocation
	subs    []*nats.Subscription
}

type outcome struct {
	at        time.Time
	expiresAt time.Time
	denied    string // non-empty: the denial's reason
}

type revocation struct {
	at        time.Time
	expiresAt time.Time
	reason    string
	agent     string
}

// newClient connects to url: as the administrator of the deployment in
// dataDir (its keys), or, with noAuth, without credentials.
func newClient(url, dataDir string, noAuth bool) (*client, error) {
	opts := []nats.Option{nats.Name("jitbench"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	var creds string
	if !noAuth {
		store, err := auth.OpenStore(filepath.Join(dataDir, "keys"))
		if err != nil {
			return nil, err
		}
		is, err := store.Ephemeral(auth.Admin)
		if err != nil {
			return nil, err
		}
		aopts, err := is.Options()
		if err != nil {
			return nil, err
		}
		opts = append(opts, aopts...)
		creds = filepath.Join(dataDir, "creds")
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := &client{nc: nc, js: js, creds: creds, agents: map[string]*nats.Conn{},
		waiting: map[string]chan outcome{}, revoked: map[string]revocation{}, notify: make(chan struct{}, 1)}
	for subj, h := range map[string]nats.MsgHandler{
		events.TypeGranted + ".>": c.onGranted,
		events.TypeDecided + ".>": c.onDecided,
		events.TypeRevoked + ".>": c.onRevoked,
	} {
		s, err := nc.Subscribe(subj, h)
		if err != nil {
			nc.Close()
			return nil, err
		}
		// Bursts of 10,000 revocations must not be dropped as a slow consumer.
		_ = s.SetPendingLimits(-1, -1)
		c.subs = append(c.subs, s)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *client) close() {
	c.agentsMu.Lock()
	for _, nc := range c.agents {
		nc.Close()
	}
	c.agentsMu.Unlock()
	c.nc.Close()
}

// as returns the connection of principal p: its own, made once and kept,
// with its credential, or a plain one without authentication (so that
// --no-auth differs from the default only in credentials and accounts,
// not in how many connections carry the load).
func (c *client) as(p auth.Principal) (*nats.Conn, error) {
	c.agentsMu.Lock()
	defer c.agentsMu.Unlock()
	if nc := c.agents[p.String()]; nc != nil {
		return nc, nil
	}
	url := c.agentURL
	if url == "" {
		url = c.nc.ConnectedUrl()
	}
	opts := []nats.Option{nats.Name("jitbench " + p.String()), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if c.creds != "" {
		opts = append(opts, nats.UserCredentials(filepath.Join(c.creds, p.CredsFile())))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect as %s: %w", p, err)
	}
	c.agents[p.String()] = nc
	return nc, nil
}

// jsAs is the JetStream context of principal p (see as).
func (c *client) jsAs(p auth.Principal) (jetstream.JetStream, error) {
	nc, err := c.as(p)
	if err != nil {
		return nil, err
	}
	return auth.JetStream(nc, p, c.creds != "")
}

// suffix is an id without its "xxx_" prefix: request and grant ids share it
// (events.GrantIDFor).
func suffix(id string) string {
	if i := strings.IndexByte(id, '_'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// onGranted matches a jit.granted event to its waiter by Nats-Msg-Id
// ("<grant_id>/granted"), without decoding the event.
func (c *client) onGranted(m *nats.Msg) {
	at := time.Now()
	id, ok := strings.CutSuffix(m.Header.Get(jetstream.MsgIDHeader), "/granted")
	if !ok {
		return
	}
	c.deliver(suffix(id), outcome{at: at, expiresAt: expiresAtOf(m.Data)})
}

// expiresAtOf finds the grant's expires_at in a jit.granted event's JSON
// without decoding the whole event.
func expiresAtOf(body []byte) time.Time {
	const k = `"expires_at":"`
	i := bytes.Index(body, []byte(k))
	if i < 0 {
		return time.Time{}
	}
	rest := body[i+len(k):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t
}

// onDecided only looks for denials ("<request_id>/<how>" ids), so that a
// denied request fails fast instead of waiting for a grant.
func (c *client) onDecided(m *nats.Msg) {
	if !bytes.Contains(m.Data, []byte(`"outcome":"denied"`)) {
		return
	}
	id, _, _ := strings.Cut(m.Header.Get(jetstream.MsgIDHeader), "/")
	var e struct {
		Data struct {
			Reason string `json:"reason"`
		} `json:"data"`
	}
	_ = json.Unmarshal(m.Data, &e)
	c.deliver(suffix(id), outcome{at: time.Now(), denied: "denied: " + e.Data.Reason})
}

func (c *client) deliver(key string, o outcome) {
	c.mu.Lock()
	ch, ok := c.waiting[key]
	if ok {
		delete(c.waiting, key)
	}
	c.mu.Unlock()
	if ok {
		ch <- o
	}
}

func (c *client) onRevoked(m *nats.Msg) {
	at := time.Now()
	var e struct {
		Data struct {
			GrantID   string    `json:"grant_id"`
			Agent     string    `json:"agent"`
			Reason    string    `json:"reason"`
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"data"`
	}
	if json.Unmarshal(m.Data, &e) != nil {
		return
	}
	c.mu.Lock()
	if _, dup := c.revoked[e.Data.GrantID]; !dup {
		c.revoked[e.Data.GrantID] = revocation{at: at, expiresAt: e.Data.ExpiresAt, reason: e.Data.Reason, agent: e.Data.Agent}
	}
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// revocationOf returns the grant's revocation, if one arrived.
func (c *client) revocationOf(grantID string) (revocation, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.revoked[grantID]
	return r, ok
}

// waitRevoked waits until every grant in ids has a revocation or the
// deadline passes, and returns the revocations found.
func (c *client) waitRevoked(ids []string, deadline time.Time) map[string]revocation {
	out := make(map[string]revocation, len(ids))
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		c.mu.Lock()
		for _, id := range ids {
			if _, done := out[id]; done {
				continue
			}
			if r, ok := c.revoked[id]; ok {
				out[id] = r
			}
		}
		c.mu.Unlock()
		if len(out) == len(ids) {
			return out
		}
		select {
		case <-c.notify:
		case <-time.After(5 * time.Millisecond):
		case <-t.C:
			return out
		}
	}
}

// grant is a grant in hand.
type grant struct {
	id, agent string
	sent, at  time.Time // request sent; jit.granted seen
	expiresAt time.Time
	duration  time.Duration
}

var errDenied = errors.New("request denied")

// request asks for perm for agent for d and waits until its jit.granted is
// seen: the agent's round trip, request to grant in hand.
func (c *client) request(ctx context.Context, agent, perm string, d time.Duration) (grant, error) {
	reqID := events.NewID("req")
	body, err := json.Marshal(broker.RequestInput{
		RequestID: reqID, Agent: agent, Permissions: []string{perm},
		Duration: d.String(), Reason: "benchmark",
	})
	if err != nil {
		return grant{}, err
	}
	key := suffix(reqID)
	ch := make(chan outcome, 1)
	c.mu.Lock()
	c.waiting[key] = ch
	c.mu.Unlock()
	cleanup := func() {
		c.mu.Lock()
		delete(c.waiting, key)
		c.mu.Unlock()
	}
	nc, err := c.as(auth.Principal{Kind: auth.KindAgent, ID: agent})
	if err != nil {
		cleanup()
		return grant{}, err
	}
	sent := time.Now()
	resp, err := nc.RequestWithContext(ctx, broker.APIRequest, body)
	if err != nil {
		cleanup()
		return grant{}, fmt.Errorf("request: %w", err)
	}
	if code := resp.Header.Get("Nats-Service-Error-Code"); code != "" {
		cleanup()
		return grant{}, fmt.Errorf("request refused (%s): %s", code, resp.Data)
	}
	select {
	case o := <-ch:
		if o.denied != "" {
			return grant{}, fmt.Errorf("%w: %s", errDenied, o.denied)
		}
		return grant{id: events.GrantIDFor(reqID), agent: agent, sent: sent, at: o.at, expiresAt: o.expiresAt, duration: d}, nil
	case <-ctx.Done():
		cleanup()
		return grant{}, fmt.Errorf("waiting for the grant of %s: %w", reqID, ctx.Err())
	}
}
