package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// audit prints the audit trail, oldest first, up to the last event stored
// when it started, then exits 0. It reads with JetStream direct get and
// creates no consumer, so a principal that may only read the stream can run
// it.
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
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
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
	nc, _, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	err = broker.ReadDirect(ctx, nc, broker.AuditStream, r, func(m broker.StoredMsg) error {
		a.showEvent(m)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", broker.AuditStream, err)
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

func (a *app) showEvent(m broker.StoredMsg) {
	e, err := broker.FromMsg(m.Header, m.Data)
	if err != nil {
		fmt.Fprintf(a.stderr, "jitctl audit: seq %d on %s is not a valid event: %v\n", m.Seq, m.Subject, err)
		return
	}
	if a.json {
		b, err := events.Encode(e)
		if err != nil {
			fmt.Fprintf(a.stderr, "jitctl audit: seq %d: %v\n", m.Seq, err)
			return
		}
		a.printf("%s\n", b)
		return
	}
	t := e.Time()
	if t.IsZero() {
		t = m.Time
	}
	who := e.Subject()
	if who == "" {
		who = "-"
	}
	a.printf("%s  %-15s  %-20s  %s\n", t.UTC().Format("2006-01-02T15:04:05.000Z"), e.Type(), who, summary(e))
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
		return fmt.Sprintf("%s %s for %s: %q", r.RequestID, perms(r.Permissions), r.Duration(), r.Reason), err
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
	return string(e.Data()), nil
}

func perms(p []string) string { return strings.Join(p, ",") }
