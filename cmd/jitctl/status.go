package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// statusServices are the services a healthy system runs (at least one
// instance each).
var statusServices = []string{"requester", "policy", "approval", "revoker", "auditor"}

// Instance is one running service instance as jitctl status shows it.
type Instance struct {
	Service string    `json:"service"`
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Uptime  string    `json:"uptime"`
	// Status is what the instance says of itself; nil if it says nothing
	// (an older version).
	Status *service.Status `json:"status,omitempty"`
}

// StatusReport is jitctl status's whole answer (--json prints it).
type StatusReport struct {
	Health    string     `json:"health"` // healthy | degraded | unreachable
	Problems  []string   `json:"problems"`
	Instances []Instance `json:"instances"`
	// ConfigRevision is the active configuration's revision in the bucket.
	ConfigRevision uint64 `json:"config_revision"`
	// Suspended are the agents suspended now.
	Suspended []events.Suspension `json:"suspended"`
	// FailingRevocations come from the revokers' reports.
	FailingRevocations []failing `json:"failing_revocations"`
}

type failing struct {
	GrantID   string    `json:"grant_id"`
	Agent     string    `json:"agent"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error"`
}

// status shows every running service instance, its consumers' backlog, the
// revocations that keep failing, the active configuration's revision and
// the suspended agents. Exit 0 healthy, 1 degraded, 2 unreachable.
func (a *app) status(ctx context.Context, args []string) error {
	fs := a.flags()
	wait := fs.Duration("wait", time.Second, "how long to collect the services' answers")
	maxBacklog := fs.Uint64("max-backlog", 1000, "a consumer with more undelivered messages than this is degraded")
	maxAge := fs.Duration("max-age", time.Minute, "a consumer whose oldest unacknowledged message is older than this is degraded")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	rep := a.collectStatus(ctx, *wait, *maxBacklog, *maxAge)
	if a.json {
		if err := a.printJSON(rep); err != nil {
			return err
		}
	} else {
		a.writeStatus(rep)
	}
	switch rep.Health {
	case "healthy":
		return nil
	case "degraded":
		return errStatusDegraded
	}
	return errStatusUnreachable
}

var (
	// errStatusDegraded exits 1 (as a refusal: the report is printed).
	errStatusDegraded = fmt.Errorf("degraded: %w", errRefused)
	// errStatusUnreachable exits 2, as any error.
	errStatusUnreachable = errors.New("the JIT system is unreachable")
)

func (a *app) collectStatus(ctx context.Context, wait time.Duration, maxBacklog uint64, maxAge time.Duration) StatusReport {
	rep := StatusReport{Health: "healthy", Problems: []string{}, Instances: []Instance{}, Suspended: []events.Suspension{}, FailingRevocations: []failing{}}
	problem := func(format string, args ...any) {
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		if rep.Health == "healthy" {
			rep.Health = "degraded"
		}
	}
	nc, js, err := a.connect()
	if err != nil {
		rep.Health = "unreachable"
		rep.Problems = append(rep.Problems, err.Error())
		return rep
	}
	defer nc.Close()
	// Answers come together; stop 250 ms after the last one.
	stats, err := service.Stats(ctx, nc, "", wait, 250*time.Millisecond)
	if err != nil {
		rep.Health = "unreachable"
		rep.Problems = append(rep.Problems, err.Error())
		return rep
	}
	now := time.Now()
	running := map[string]int{}
	for _, s := range stats {
		in := Instance{Service: strings.TrimPrefix(s.Name, "jit-"), ID: s.ID, Version: s.Version, Started: s.Started,
			Uptime: events.FormatDuration(now.Sub(s.Started).Round(time.Second)), Status: service.StatusIn(s)}
		running[in.Service]++
		rep.Instances = append(rep.Instances, in)
	}
	slices.SortFunc(rep.Instances, func(x, y Instance) int {
		return strings.Compare(x.Service+"/"+x.ID, y.Service+"/"+y.ID)
	})
	if len(rep.Instances) == 0 {
		rep.Health = "unreachable"
		rep.Problems = append(rep.Problems, "no JIT service answers on the services API ($SRV.STATS)")
	}
	for _, name := range statusServices {
		if running[name] == 0 && len(rep.Instances) > 0 {
			problem("no %s is running", name)
		}
	}
	seenFailing := map[string]bool{}
	for _, in := range rep.Instances {
		st := in.Status
		if st == nil {
			continue
		}
		if !st.Ready {
			problem("%s %s is not ready: %s", in.Service, in.ID, st.NotReady)
		}
		for _, c := range st.Consumers {
			switch {
			case c.Error != "":
				problem("consumer %s: %s", c.Durable, c.Error)
			case c.Pending > maxBacklog:
				problem("consumer %s has %d messages waiting (more than %d)", c.Durable, c.Pending, maxBacklog)
			case c.OldestUnackedAge > maxAge:
				problem("consumer %s has a message unacknowledged for %s", c.Durable, events.FormatDuration(c.OldestUnackedAge.Round(time.Second)))
			}
		}
		for _, f := range st.FailingRevocations {
			if seenFailing[f.GrantID] {
				continue
			}
			seenFailing[f.GrantID] = true
			rep.FailingRevocations = append(rep.FailingRevocations, failing{GrantID: f.GrantID, Agent: f.Agent, Reason: f.Reason,
				Attempts: f.Attempts, Since: f.Since, LastError: f.LastError})
		}
	}
	if n := len(rep.FailingRevocations); n > 0 {
		problem("%d revocation(s) keep failing", n)
	}
	if _, rev, err := activeConfig(ctx, js); err != nil {
		problem("configuration: %v", err)
	} else {
		rep.ConfigRevision = rev
		for _, in := range rep.Instances {
			if in.Status != nil && in.Status.ConfigRevision != 0 && in.Status.ConfigRevision < rev {
				// A change takes an instant to reach every service; one
				// that stays behind stopped following.
				rep.Problems = append(rep.Problems, fmt.Sprintf("note: %s %s follows configuration revision %d, the bucket holds %d", in.Service, in.ID, in.Status.ConfigRevision, rev))
			}
		}
	}
	susp, err := suspendedAgents(ctx, nc, js)
	if err != nil {
		problem("suspensions: %v", err)
	} else {
		rep.Suspended = susp
	}
	return rep
}

// suspendedAgents reads the suspensions bucket by direct get (an operator
// may not create a consumer): the last value of every key still present.
func suspendedAgents(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) ([]events.Suspension, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	prefix := "$KV." + broker.BucketSuspensions + "."
	last := map[string]broker.StoredMsg{}
	err := broker.ReadDirect(ctx, nc, "KV_"+broker.BucketSuspensions, broker.DirectRead{Filter: prefix + ">", Prefix: broker.APIPrefixOf(js), Wait: 2 * time.Second},
		func(m broker.StoredMsg) error {
			last[strings.TrimPrefix(m.Subject, prefix)] = m
			return nil
		})
	if err != nil {
		return nil, err
	}
	out := []events.Suspension{}
	for _, m := range last {
		if m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" || len(m.Data) == 0 {
			continue // deleted or purged: reinstated
		}
		var s events.Suspension
		if err := json.Unmarshal(m.Data, &s); err != nil {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y events.Suspension) int { return strings.Compare(x.Agent, y.Agent) })
	return out, nil
}

func (a *app) writeStatus(r StatusReport) {
	a.printf("health: %s\n", r.Health)
	for _, p := range r.Problems {
		a.printf("  ! %s\n", p)
	}
	a.printf("\nservices:\n")
	for _, in := range r.Instances {
		ready := "?"
		if in.Status != nil {
			ready = "ready"
			if !in.Status.Ready {
				ready = "NOT READY"
			}
		}
		a.printf("  %-10s %s  version %s  up %s  %s", in.Service, in.ID, in.Version, in.Uptime, ready)
		if in.Status != nil {
			a.printf("  config rev %d", in.Status.ConfigRevision)
		}
		a.printf("\n")
		if in.Status == nil {
			continue
		}
		for _, c := range in.Status.Consumers {
			if c.Error != "" {
				a.printf("    consumer %-22s ERROR %s\n", c.Durable, c.Error)
				continue
			}
			a.printf("    consumer %-22s backlog %d  unacked %d  redelivered %d  oldest unacked %s\n", c.Durable, c.Pending, c.AckPending,
				c.Redelivered, events.FormatDuration(c.OldestUnackedAge.Round(time.Millisecond)))
		}
	}
	a.printf("\nconfiguration: revision %d\n", r.ConfigRevision)
	a.printf("\nfailing revocations: %d\n", len(r.FailingRevocations))
	for _, f := range r.FailingRevocations {
		a.printf("  %s  agent %s  reason %s  %d attempts since %s  last error: %s\n", f.GrantID, f.Agent, f.Reason, f.Attempts, timeText(f.Since), f.LastError)
	}
	a.printf("\nsuspended agents: %d\n", len(r.Suspended))
	for _, s := range r.Suspended {
		a.printf("  %s  rule %s  since %s\n", s.Agent, s.Rule, timeText(s.SuspendedAt))
	}
}
