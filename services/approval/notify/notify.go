// Package notify tells people that a request waits for them: it delivers
// a pending request to the notifiers (webhook, Slack) its rule names, and
// records each delivery's end as a jit.notification event.
//
// A request that starts waiting for a human is handed to every notifier its
// rule names, through a bounded in-memory queue read by a few workers, so
// the decision consumer never waits on a slow webhook. Each delivery is
// retried with exponential backoff; its end (delivered, or failed after the
// last attempt) is one jit.notification event and a counter. A full queue
// drops the delivery, counts it, logs it and records it as a failed
// jit.notification: the request itself is stored before any notification
// and waits regardless.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/rs/zerolog"
)

const (
	queueSize   = 256
	workers     = 2
	postTimeout = 5 * time.Second
	// recordTimeout bounds the publication of a jit.notification.
	recordTimeout = 10 * time.Second

	// HeaderSignature carries a webhook body's signature:
	// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>".
	HeaderSignature = "Jit-Signature"
	// HeaderDelivery carries the delivery id: "<request_id>/<notifier>".
	HeaderDelivery = "Jit-Delivery"
)

// Attempts is how many times a delivery is tried before it fails.
const Attempts = 5

// Counters count notification outcomes since start.
type Counters struct {
	Delivered, Failed, Dropped, Retries atomic.Int64
}

// Request is a request that waits for a human, as a notification tells of
// it.
type Request struct {
	events.Pending
	// Required is how many approvals it needs (0 means 1).
	Required int
}

// Options are what a Notifier works with.
type Options struct {
	Log       zerolog.Logger
	Publisher *broker.Publisher
	Now       func() time.Time
	// Config names the notifiers.
	Config *config.Source
	// ConsoleURL is the approver console's public base address (no
	// trailing '/'), or "" when there is none: the links in a
	// notification point there.
	ConsoleURL func(*config.Config) string
}

type job struct {
	req      Request
	n        config.Notifier
	console  string
	enqueued time.Time
}

// Notifier delivers notifications. Build it with New, run its workers with
// Start, and Wait for them after the context given to Start ends.
type Notifier struct {
	o        Options
	q        chan job
	client   *http.Client
	backoff  func(attempt int) time.Duration
	wg       sync.WaitGroup
	once     sync.Once
	counters Counters
}

// New returns a Notifier; nothing runs until Start.
func New(o Options) *Notifier {
	return &Notifier{
		o:      o,
		q:      make(chan job, queueSize),
		client: &http.Client{Timeout: postTimeout},
		backoff: func(attempt int) time.Duration {
			return min(200*time.Millisecond<<(attempt-1), 10*time.Second)
		},
	}
}

// SetBackoff sets the delay before retry attempt n (1-based) of a failed
// notification; tests shorten it. Call it before Start.
func (n *Notifier) SetBackoff(f func(attempt int) time.Duration) { n.backoff = f }

// SetQueue replaces the queue with one of size (0: a job is taken only by
// an idle worker); tests fill it. Call it before Start.
func (n *Notifier) SetQueue(size int) { n.q = make(chan job, size) }

// Counters returns the notification counters.
func (n *Notifier) Counters() *Counters { return &n.counters }

// Start starts the delivery workers; they end when ctx ends. Starting
// again does nothing.
func (n *Notifier) Start(ctx context.Context) {
	n.once.Do(func() {
		for range workers {
			n.wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case j := <-n.q:
						n.deliver(ctx, j)
					}
				}
			})
		}
	})
}

// Wait waits for the workers to end (after Start's context ended).
func (n *Notifier) Wait() { n.wg.Wait() }

// Pending queues r for the notifiers named. It never blocks: a full queue
// drops the notification, and records that.
func (n *Notifier) Pending(r Request, names []string) {
	if len(names) == 0 {
		return
	}
	cfg := n.o.Config.Current()
	for _, name := range names {
		var nf *config.Notifier
		for i := range cfg.Notifiers {
			if cfg.Notifiers[i].Name == name {
				nf = &cfg.Notifiers[i]
			}
		}
		if nf == nil {
			n.o.Log.Warn().Str("notifier", name).Msg("rule names a notifier that is not configured")
			continue
		}
		select {
		case n.q <- job{req: r, n: *nf, console: n.o.ConsoleURL(cfg), enqueued: n.o.Now()}:
		default:
			n.counters.Dropped.Add(1)
			n.o.Log.Error().Str("notifier", name).Str("request_id", r.Decision.RequestID).
				Msg("notification queue full; this notification is dropped (the request still waits)")
			n.record(events.Notification{RequestID: r.Decision.RequestID, Agent: r.Decision.Agent,
				Notifier: nf.Name, NotifierType: nf.Type, Outcome: events.NotificationFailed,
				Error: "dropped: the notification queue was full", NotifiedAt: n.o.Now().UTC()})
		}
	}
}

// deliver sends one notification with retries and records its end.
func (n *Notifier) deliver(ctx context.Context, j job) {
	body, err := notificationBody(j)
	rid := j.req.Decision.RequestID
	log := n.o.Log.With().Str("notifier", j.n.Name).Str("request_id", rid).Logger()
	out := events.Notification{RequestID: rid, Agent: j.req.Decision.Agent, Notifier: j.n.Name, NotifierType: j.n.Type}
	if err != nil {
		out.Outcome, out.Error = events.NotificationFailed, err.Error()
	}
	for attempt := 1; err == nil && attempt <= Attempts; attempt++ {
		out.Attempts = attempt
		status, derr := n.post(ctx, j, body)
		out.HTTPStatus = status
		if derr == nil {
			out.Outcome, out.Error = events.NotificationDelivered, ""
			break
		}
		out.Outcome, out.Error = events.NotificationFailed, derr.Error()
		if attempt == Attempts || (status >= 400 && status < 500 && status != 408 && status != 429) {
			break // out of attempts, or the receiver refuses the payload itself
		}
		n.counters.Retries.Add(1)
		log.Warn().Err(derr).Int("attempt", attempt).Msg("notification failed; retrying")
		select {
		case <-ctx.Done():
			out.Error += " (service stopping)"
			attempt = Attempts
		case <-time.After(n.backoff(attempt)):
		}
	}
	out.NotifiedAt = n.o.Now().UTC()
	if out.Outcome == events.NotificationDelivered {
		n.counters.Delivered.Add(1)
		log.Info().Int("attempts", out.Attempts).Msg("notification delivered")
	} else {
		n.counters.Failed.Add(1)
		log.Error().Str("error", out.Error).Int("attempts", out.Attempts).Msg("notification failed")
	}
	n.record(out)
}

// record publishes the jit.notification event that ends one delivery
// (delivered, failed, or dropped from a full queue).
func (n *Notifier) record(out events.Notification) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	if _, _, err := n.o.Publisher.Emit(ctx, out.RequestID+"/notify/"+out.Notifier, events.TypeNotification, out.Agent, out,
		events.WithRequestID(out.RequestID)); err != nil {
		n.o.Log.Error().Err(err).Str("notifier", out.Notifier).Str("request_id", out.RequestID).Msg("could not publish jit.notification")
	}
}

func (n *Notifier) post(ctx context.Context, j job, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.n.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "jit-approval")
	req.Header.Set(HeaderDelivery, j.req.Decision.RequestID+"/"+j.n.Name)
	if j.n.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(j.n.Secret, n.o.Now(), body))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s answered %s", j.n.Name, resp.Status)
	}
	return resp.StatusCode, nil
}

// Sign returns the Jit-Signature header value for body sent at t:
// "t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>". A receiver
// recomputes it and rejects old timestamps, which stops replays.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a Jit-Signature header against body and secret,
// accepting timestamps within maxAge of now.
func VerifySignature(secret, header string, body []byte, now time.Time, maxAge time.Duration) bool {
	var ts string
	for _, part := range strings.Split(header, ",") {
		if v, ok := strings.CutPrefix(part, "t="); ok {
			ts = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	t := time.Unix(sec, 0)
	if now.Sub(t) > maxAge || t.Sub(now) > maxAge {
		return false
	}
	return hmac.Equal([]byte(Sign(secret, t, body)), []byte(header))
}

// WebhookPayload is the JSON body a "webhook" notifier receives.
type WebhookPayload struct {
	Type          string            `json:"type"` // "jit.pending"
	RequestID     string            `json:"request_id"`
	Agent         string            `json:"agent"`
	Permissions   []string          `json:"permissions"`
	Duration      string            `json:"duration"`
	DurationMS    int64             `json:"duration_ms"`
	Reason        string            `json:"reason"`
	Context       map[string]string `json:"context,omitempty"`
	Rule          string            `json:"rule,omitempty"`
	Risk          *events.Risk      `json:"risk,omitempty"`
	ApproverRoles []string          `json:"approver_roles"`
	Approvals     int               `json:"approvals_required"`
	Deadline      time.Time         `json:"deadline"`
	ConsoleURL    string            `json:"console_url,omitempty"`
	ApproveURL    string            `json:"approve_url,omitempty"`
	DenyURL       string            `json:"deny_url,omitempty"`
}

func webhookPayload(j job) WebhookPayload {
	d := j.req.Decision
	p := WebhookPayload{
		Type: "jit.pending", RequestID: d.RequestID, Agent: d.Agent, Permissions: d.Permissions,
		Duration: events.MSDuration(d.DurationMS).String(), DurationMS: d.DurationMS,
		Reason: d.Request.Reason, Context: d.Request.Context, Rule: d.Rule, Risk: d.Risk,
		ApproverRoles: d.ApproverRoles, Approvals: max(j.req.Required, 1), Deadline: j.req.Deadline,
	}
	if j.console != "" {
		p.ConsoleURL = j.console + "/console/"
		p.ApproveURL = j.console + "/console/requests/" + url.PathEscape(d.RequestID) + "?action=approve"
		p.DenyURL = j.console + "/console/requests/" + url.PathEscape(d.RequestID) + "?action=deny"
	}
	return p
}

func notificationBody(j job) ([]byte, error) {
	p := webhookPayload(j)
	switch j.n.Type {
	case "slack":
		return json.Marshal(slackPayload(p))
	default:
		return json.Marshal(p)
	}
}

// slackPayload is a Slack incoming-webhook message with blocks.
func slackPayload(p WebhookPayload) map[string]any {
	risk := "n/a"
	if p.Risk != nil {
		parts := make([]string, 0, len(p.Risk.Parts))
		for _, rp := range p.Risk.Parts {
			parts = append(parts, fmt.Sprintf("%s +%d", rp.Name, rp.Points))
		}
		sort.Strings(parts)
		risk = strconv.Itoa(p.Risk.Score)
		if len(parts) > 0 {
			risk += " (" + strings.Join(parts, ", ") + ")"
		}
	}
	text := fmt.Sprintf("%s asks for %s for %s", p.Agent, strings.Join(p.Permissions, ", "), p.Duration)
	field := func(k, v string) map[string]any { return map[string]any{"type": "mrkdwn", "text": "*" + k + "*\n" + v} }
	blocks := []any{
		map[string]any{"type": "header", "text": map[string]any{"type": "plain_text", "text": "JIT access request needs approval"}},
		map[string]any{"type": "section", "fields": []any{
			field("Agent", slackEscape(p.Agent)),
			field("Permissions", slackEscape(strings.Join(p.Permissions, ", "))),
			field("Duration", p.Duration),
			field("Risk", slackEscape(risk)),
			field("Approver roles", slackEscape(strings.Join(p.ApproverRoles, " or "))),
			field("Deadline", p.Deadline.UTC().Format(time.RFC3339)),
		}},
		map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": "*Reason*\n" + slackEscape(p.Reason)}},
	}
	if p.ApproveURL != "" {
		blocks = append(blocks, map[string]any{"type": "actions", "elements": []any{
			map[string]any{"type": "button", "style": "primary", "text": map[string]any{"type": "plain_text", "text": "Approve"}, "url": p.ApproveURL},
			map[string]any{"type": "button", "style": "danger", "text": map[string]any{"type": "plain_text", "text": "Deny"}, "url": p.DenyURL},
		}})
	}
	return map[string]any{"text": slackEscape(text), "blocks": blocks}
}

// slackEscape escapes the three characters Slack's mrkdwn treats as markup,
// so an agent's reason cannot inject links or mentions.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
