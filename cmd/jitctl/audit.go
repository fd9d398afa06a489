package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/ocsf"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Output formats of audit.
const (
	formatText  = "text"
	formatJSON  = "json" // the CloudEvent as stored, one per line (= --json)
	formatOCSF  = "ocsf" // OCSF 1.1.0, one object per line
	followName  = "jitctl-audit"
	followBatch = 64
)

// audit prints the audit trail, oldest first, up to the last event stored
// when it started, then exits 0. It reads with JetStream direct get and
// creates no consumer, so a principal that may only read the stream can run
// it. With --follow it keeps reading through a durable pull consumer
// (--durable): bound by name when it exists, created only when it does not,
// and acknowledged line by line after each line is written, so that a
// restart resumes after the last line printed.
func (a *app) audit(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "verify":
			return a.auditVerify(ctx, args[1:])
		case "export":
			return a.auditExport(ctx, args[1:])
		}
	}
	fs := a.flags()
	since := fs.String("since", "", "only events of the last DURATION (e.g. 1h) or since TIME (RFC 3339)")
	agent := fs.String("agent", "", "only events about this agent")
	format := fs.String("format", "", "text, json (the CloudEvents as stored; same as --json) or ocsf (OCSF 1.1.0)")
	follow := fs.Bool("follow", false, "keep reading new events with a durable consumer; resumes where it stopped")
	durable := fs.String("durable", "", "--follow's durable consumer: bound if it exists (an administrator may create it), created otherwise (default: the credential's own, audit_<kind>_<id>, or "+followName+" without credentials)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	switch *format {
	case "":
		*format = formatText
		if a.json {
			*format = formatJSON
		}
	case formatText, formatJSON, formatOCSF:
	default:
		return usagef("--format %q: text, json or ocsf", *format)
	}
	var r broker.DirectRead
	if *since != "" {
		if r.Since, err = parseSince(*since, time.Now()); err != nil {
			return err
		}
	}
	if *agent != "" {
		if !events.ValidID(*agent) {
			return usagef("--agent %q is not a valid agent id", *agent)
		}
		// Every event subject is <type (two tokens)>.<agent>.
		r.Filter = "*.*." + *agent
	}
	show := func(m broker.StoredMsg) error { return a.showEvent(m, *format) }
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	r.Prefix = broker.APIPrefixOf(js)
	if *durable == "" {
		*durable = followName
		if p, ok, _ := a.principal(auth.DefaultOperator); ok && p.AuditDurable() != "" {
			// A reader's credential may use only its own durable.
			*durable = p.AuditDurable()
		}
	}
	if *follow {
		if !validDurable(*durable) {
			return usagef("--durable %q: letters, digits, - and _", *durable)
		}
		return a.follow(ctx, js, *durable, r, show)
	}
	if err := broker.ReadDirect(ctx, nc, broker.AuditStream, r, show); err != nil {
		return fmt.Errorf("read %s: %w", broker.AuditStream, err)
	}
	return nil
}

func validDurable(s string) bool { return events.ValidID(s) }

// follow prints every event of the durable consumer name, then waits for
// more until ctx ends (exit 0). The consumer is looked up first
// (CONSUMER.INFO) and created only when missing, with r's filter and start;
// an existing one keeps its own. Each message is acknowledged (and the ack
// confirmed) after its line is written; messages fetched but not printed
// when ctx ends are handed back (nak) so the next run prints them first.
func (a *app) follow(ctx context.Context, js jetstream.JetStream, name string, r broker.DirectRead, show func(broker.StoredMsg) error) error {
	cons, err := js.Consumer(ctx, broker.AuditStream, name)
	switch err = broker.MapError(err); {
	case errors.Is(err, broker.ErrNotFound):
		cfg := jetstream.ConsumerConfig{
			Durable:       name,
			Description:   "jitctl audit --follow",
			AckPolicy:     jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxAckPending: followBatch,
		}
		if r.Filter != "" {
			cfg.FilterSubject = r.Filter
		}
		if !r.Since.IsZero() {
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &r.Since
		}
		if cons, err = js.CreateConsumer(ctx, broker.AuditStream, cfg); err != nil {
			return fmt.Errorf("create consumer %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("consumer %s: %w", name, err)
	default:
		if r.Filter != "" || !r.Since.IsZero() {
			fmt.Fprintf(a.stderr, "jitctl audit: following the existing consumer %s from where it stopped; --agent and --since apply only when it is created\n", name)
		}
	}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(followBatch, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow %s: %w", name, err)
		}
		for m := range batch.Messages() {
			if ctx.Err() != nil {
				_ = m.Nak()
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				_ = m.Nak()
				continue
			}
			sm := broker.StoredMsg{Seq: md.Sequence.Stream, Subject: m.Subject(), Time: md.Timestamp, Header: m.Headers(), Data: m.Data()}
			if err := show(sm); err != nil {
				_ = m.Nak()
				cancel()
				return err // the output is gone: nothing more can be delivered
			}
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err = m.DoubleAck(actx)
			cancel()
			if err != nil {
				fmt.Fprintf(a.stderr, "jitctl audit: ack of seq %d failed (it may be printed again): %v\n", sm.Seq, err)
			}
		}
		err = batch.Error()
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(a.stderr, "jitctl audit: %v; retrying\n", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// parseSince reads a duration back from now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, usagef("--since %s must not be negative", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--since %q is neither a duration (1h) nor an RFC 3339 time", s)
}

// showEvent writes one stored message in format. A message that is not a
// valid event is reported on stderr and skipped. The error is the output's.
func (a *app) showEvent(m broker.StoredMsg, format string) error {
	e, err := broker.FromMsg(m.Header, m.Data)
	if err != nil {
		fmt.Fprintf(a.stderr, "jitctl audit: seq %d on %s is not a valid event: %v\n", m.Seq, m.Subject, err)
		return nil
	}
	var line []byte
	switch format {
	case formatJSON:
		if line, err = events.Encode(e); err != nil {
			fmt.Fprintf(a.stderr, "jitctl audit: seq %d: %v\n", m.Seq, err)
			return nil
		}
	case formatOCSF:
		o, err := ocsf.From(e, m.Seq, m.Time)
		if err == nil {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // "Identity & Access Management", as written
			err = enc.Encode(o)
			line = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "jitctl audit: seq %d: %v\n", m.Seq, err)
			return nil
		}
	default:
		t := e.Time()
		if t.IsZero() {
			t = m.Time
		}
		who := e.Subject()
		if who == "" {
			who = "-"
		}
		line = fmt.Appendf(nil, "%s  %-15s  %-20s  %s", t.UTC().Format("2006-01-02T15:04:05.000Z"), e.Type(), who, summary(e))
	}
	_, err = a.stdout.Write(append(line, '\n'))
	return err
}

// summary is the type-specific one-line description of an event.
func summary(e events.Event) string {
	s, err := summarize(e)
	if err != nil {
		return "(unreadable data: " + err.Error() + ")"
	}
	return s
}

func summarize(e events.Event) (string, error) {
	switch e.Type() {
	case events.TypeRequested:
		r, err := lenient[events.Request](e)
		return fmt.Sprintf("%s %s for %s: %q", r.RequestID, perms(r.Permissions), events.ShortDuration(r.Duration()), r.Reason), err
	case events.TypeRejected:
		r, err := lenient[events.Rejection](e)
		s := fmt.Sprintf("%s/%s: %s", r.Stage, r.Code, r.Message)
		if r.RequestID != "" {
			s = r.RequestID + " " + s
		}
		return s, err
	case events.TypeDecided:
		d, err := lenient[events.Decision](e)
		s := fmt.Sprintf("%s %s (%s", d.RequestID, d.Outcome, d.Mode)
		if d.Rule != "" {
			s += ", rule " + d.Rule
		}
		if d.Risk != nil {
			s += fmt.Sprintf(", risk %d", d.Risk.Score)
		}
		s += ")"
		if d.DecidedBy.Kind == events.ActorApprover {
			s += " by " + d.DecidedBy.ID
		}
		if d.Reason != "" {
			s += ": " + d.Reason
		}
		return s, err
	case events.TypeGranted:
		g, err := lenient[events.Grant](e)
		return fmt.Sprintf("%s %s until %s", g.GrantID, perms(g.Permissions), timeText(g.ExpiresAt)), err
	case events.TypeRevoked:
		r, err := lenient[events.Revocation](e)
		s := fmt.Sprintf("%s %s: %s by %s", r.GrantID, perms(r.Permissions), r.Reason, r.RevokedBy)
		if r.Detail != "" {
			s += " (" + r.Detail + ")"
		}
		return s, err
	case events.TypeGuardrailFired:
		g, err := lenient[events.GuardrailFired](e)
		s := "rule " + g.Rule
		if g.Detail != "" {
			s += ": " + g.Detail
		}
		return s, err
	case events.TypeSuspended:
		s, err := lenient[events.Suspension](e)
		return fmt.Sprintf("by guardrail %s; revoked %d grant(s)", s.Rule, len(s.RevokedGrants)), err
	case events.TypeReinstated:
		r, err := lenient[events.Reinstatement](e)
		s := "by " + r.ReinstatedBy.String()
		if r.Comment != "" {
			s += ": " + r.Comment
		}
		return s, err
	case events.TypeApproved:
		a, err := lenient[events.Approval](e)
		s := fmt.Sprintf("%s approved by %s", a.RequestID, a.Approver.ID)
		if a.Required > 1 {
			s += fmt.Sprintf(" (%d of %d)", a.Approvals, a.Required)
		}
		s += fmt.Sprintf(": %s for %s", perms(a.Permissions), events.ShortDuration(events.MSDuration(a.DurationMS)))
		if a.Comment != "" {
			s += fmt.Sprintf(" (%q)", a.Comment)
		}
		return s, err
	case events.TypeNotification:
		n, err := lenient[events.Notification](e)
		s := fmt.Sprintf("%s to %s (%s): %s after %d attempt(s)", n.RequestID, n.Notifier, n.NotifierType, n.Outcome, n.Attempts)
		if n.HTTPStatus != 0 {
			s += fmt.Sprintf(", HTTP %d", n.HTTPStatus)
		}
		if n.Error != "" {
			s += ": " + n.Error
		}
		return s, err
	case events.TypeWithdrawn:
		w, err := lenient[events.Withdrawal](e)
		return fmt.Sprintf("%s withdrawn by %s", w.RequestID, w.WithdrawnBy), err
	case events.TypeCheckpoint:
		c, err := lenient[events.Checkpoint](e)
		return fmt.Sprintf("seq %d-%d (%d messages) chain %.12s… signed by %s", c.FirstSeq, c.LastSeq, c.Count, c.Chain, c.KeyID), err
	case events.TypeConfigApplied:
		c, err := lenient[events.ConfigApplied](e)
		s := fmt.Sprintf("%s %s from %s", c.Outcome, c.Digest, c.Source)
		if c.Error != "" {
			s += ": " + c.Error
		}
		return s, err
	}
	// A type this jitctl does not know (a newer system's): its data as sent.
	return string(e.Data()), nil
}

func perms(p []string) string { return strings.Join(p, ",") }
