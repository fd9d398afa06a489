package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/cmd/internal/jitdproc"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
)

// chaosPerm is the permission every agent asks for.
const chaosPerm = "chaos:write"

// Drain timing: after the last grant's expires_at the round waits endMargin
// (TTLs are whole seconds and the server sweeps them about every 250 ms:
// BROKER-FACTS), then until the audit stream has had no new event but
// checkpoints for quiet; at most drainLimit in all.
const (
	endMargin  = 2 * time.Second
	quiet      = 3 * time.Second
	drainLimit = 3 * time.Minute
)

// chaosConfig is the configuration of the round: p.agents agents that may
// each ask for chaosPerm for up to an hour, auto-approved.
func chaosConfig(p params) string {
	var b strings.Builder
	b.WriteString("timezone: UTC\napproval_window: 15m\nagents:\n")
	for i := range p.agents {
		fmt.Fprintf(&b, "  - {id: %s, owner: chaos, eligible: [%s], max_jit_duration: 1h}\n", agentID(i), chaosPerm)
	}
	b.WriteString("rules:\n  - name: chaos-auto\n    permissions: [\"*\"]\n    mode: auto-approve\n")
	return b.String()
}

// run is the whole round. An error means the round could not be run (jitd
// did not start or come back); the counts are the result otherwise.
func run(ctx context.Context, o options) (res *singleNode, err error) {
	p := o.params
	logf := func(format string, args ...any) { fmt.Fprintf(o.log, "jitchaos: "+format+"\n", args...) }
	started := time.Now()
	dir, err := os.MkdirTemp("", "jitchaos-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if o.keep || err != nil {
			logf("data directory %s kept (jitd.log, the JetStream store)", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	cfgPath := filepath.Join(dir, "jit.yaml")
	if err := os.WriteFile(cfgPath, []byte(chaosConfig(p)), 0o644); err != nil {
		return nil, err
	}
	if _, err := config.LoadFile(cfgPath); err != nil {
		return nil, fmt.Errorf("the generated configuration is refused: %w", err)
	}
	var nodes []*jitdproc.Jitd
	home := dir
	var lab *netLab
	if o.cluster && p.partitionFor > 0 {
		// Each node in a network namespace of its own, so that one can be
		// cut off (netns.go).
		if lab, err = newNetLab(3); err != nil {
			return nil, fmt.Errorf("the round's network: %w", err)
		}
		defer lab.close()
		if nodes, err = jitdproc.NewClusterOn(o.jitd, dir, cfgPath, "", false, lab.hosts(), lab.wraps()); err != nil {
			return nil, err
		}
	} else if o.cluster {
		if nodes, err = jitdproc.NewCluster(o.jitd, dir, cfgPath, "", false); err != nil {
			return nil, err
		}
	}
	if o.cluster {
		home = clusterHome(dir)
		logf("three jitd nodes: %s", strings.Join(nodes[0].Args, " "))
		err = jitdproc.StartAll(nodes, time.Minute)
	} else {
		var d *jitdproc.Jitd
		if d, err = jitdproc.New(o.jitd, dir, cfgPath, false, ""); err != nil {
			return nil, err
		}
		nodes = []*jitdproc.Jitd{d}
		err = d.Start(30 * time.Second)
	}
	defer func() {
		for _, d := range nodes {
			_ = d.Kill()
		}
	}()
	if err != nil {
		return nil, err
	}
	// Every client is given every node's URL: when one dies it reconnects
	// to another.
	var urls []string
	for _, d := range nodes {
		urls = append(urls, d.NATSURL())
	}
	url, creds := strings.Join(urls, ","), filepath.Join(home, "creds")

	w, err := startWatcher(ctx, url, creds)
	if err != nil {
		return nil, fmt.Errorf("checker: %w", err)
	}
	watching := true
	defer func() {
		if watching {
			w.stop()
		}
	}()
	obs, err := startObserver(url, home, w.pr)
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	defer obs.close()

	var (
		errMu     sync.Mutex
		agentErrs []error
	)
	agents := make([]*agent, p.agents)
	for i := range agents {
		id := agentID(i)
		nc, err := connectAgent(url, creds, id)
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		agents[i] = &agent{id: id, idx: i, nc: nc, p: p, byID: map[string]*request{}, onErr: func(err error) {
			errMu.Lock()
			agentErrs = append(agentErrs, fmt.Errorf("%s: %w", id, err))
			errMu.Unlock()
		}}
	}

	faults := plan(p.kills, p.stops)
	if o.cluster {
		faults = nil
		for _, f := range clusterPlan(p.kills, p.stops, p.partitionFor > 0) {
			faults = append(faults, f.kind+" "+f.role)
		}
	}
	logf("load: %d agents asking for grants of %s for %s; faults: %s", p.agents, (*durationsFlag)(&p.grantDurations), p.duration, strings.Join(faults, ", "))
	loadStart := time.Now()
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() { a.run(ctx, stopLoad) })
	}
	type injected struct {
		faults []fault
		err    error
	}
	quitFaults := make(chan struct{})
	faultsDone := make(chan injected, 1)
	var lead *leaders
	if o.cluster {
		if lead, err = newLeaders(url, filepath.Join(home, "keys"), obs.nc, nodes); err != nil {
			return nil, err
		}
		defer lead.close()
	}
	go func() {
		var fs []fault
		var err error
		if o.cluster {
			fs, err = injectCluster(nodes, lead, lab, creds, p, loadStart, quitFaults, logf)
		} else {
			fs, err = inject(nodes[0], p, loadStart, quitFaults, logf)
		}
		faultsDone <- injected{fs, err}
	}()
	var inj injected
	select {
	case inj = <-faultsDone:
	case <-ctx.Done():
		close(quitFaults)
		inj = <-faultsDone
	}
	// Keep the load on past the last fault, so that the recovery is
	// measured under load, and for the whole duration.
	tail := time.Until(loadStart.Add(p.duration))
	if len(inj.faults) > 0 {
		tail = max(tail, time.Until(inj.faults[len(inj.faults)-1].ready.Add(2*time.Second)))
	}
	select {
	case <-ctx.Done():
	case <-time.After(tail):
	}
	close(stopLoad)
	logf("load stopped after %s; waiting for the requests in hand (at most %s each)", time.Since(loadStart).Round(time.Second), p.outcomeTimeout)
	wg.Wait()
	if inj.err != nil {
		return nil, inj.err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	var reqs []request
	var lastEnd time.Time
	for _, a := range agents {
		for _, r := range a.requests() {
			reqs = append(reqs, r)
			if r.expiresAt.After(lastEnd) {
				lastEnd = r.expiresAt
			}
		}
	}
	if o.cluster && len(inj.faults) > 0 {
		// A message a killed node's service had been given comes again
		// only after the consumer's ack wait: the other replicas keep
		// pulling, so nobody resets the durable as a lone restarted
		// jitd does (architecture.md, "Failure behaviour").
		lastEnd = latest(lastEnd, inj.faults[len(inj.faults)-1].ready.Add(broker.DefaultAckWait+2*time.Second))
	}
	evs, err := drain(ctx, obs, w, lastEnd, logf)
	if err != nil {
		return nil, err
	}
	keys := w.seen()
	pr := w.pr.result()
	w.stop()
	watching = false

	res = tally(reqs, evs, keys, inj.faults, pr, loadStart)
	logUnanswered(logf, reqs, evs, loadStart)
	res.Config = roundConfig{
		Agents: p.agents, Kills: p.kills, Stops: p.stops, DurationS: p.duration.Seconds(),
		DownS: p.down.Seconds(), StopForS: p.stopFor.Seconds(), PartitionForS: p.partitionFor.Seconds(), OutcomeTimeoutS: p.outcomeTimeout.Seconds(), Quick: o.quick,
	}
	for _, g := range p.grantDurations {
		res.Config.GrantDurations = append(res.Config.GrantDurations, g.String())
	}
	res.Config.Nodes = len(nodes)
	res.JitdWarnings = map[string]int{}
	for _, d := range nodes {
		for k, n := range d.Warnings() {
			res.JitdWarnings[k] += n
		}
	}
	host, _ := os.Hostname()
	res.Run = map[string]any{
		"started": started.UTC().Format(time.RFC3339), "seconds": round(time.Since(started).Seconds()),
		"cpus": runtime.NumCPU(), "go": runtime.Version(), "host": host, "loadavg": loadavg(),
		"audit_events": len(evs),
	}
	if len(agentErrs) > 0 {
		res.Run["agent_errors"] = fmt.Sprint(agentErrs)
	}
	return res, nil
}

// logUnanswered names, for every request whose agent gave up waiting for
// its outcome, when it was accepted and on which node, when the agent gave
// up and on which node, and when the stream stored its outcome: late on
// the stream is the system's delay, stored in time but not seen is the
// agent's feed's.
func logUnanswered(logf func(string, ...any), reqs []request, evs []stored, loadStart time.Time) {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%.3f s", t.Sub(loadStart).Seconds())
	}
	for _, r := range reqs {
		if r.outcome != "" || r.gaveUp.IsZero() {
			continue
		}
		var stored time.Time
		what := "no outcome"
		for _, e := range evs {
			if e.requestID != r.id {
				continue
			}
			if e.typ == events.TypeGranted || e.typ == events.TypeRejected || e.typ == events.TypeDecided && e.outcome == events.OutcomeDenied {
				stored, what = e.at, e.typ
				break
			}
		}
		logf("unanswered by the client: %s sent at %s, accepted at %s on %s, given up at %s on %s; %s stored at %s",
			r.id, at(r.firstSent), at(r.accepted), r.acceptedOn, at(r.gaveUp), r.gaveUpOn, what, at(stored))
	}
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// drain waits until every grant has ended (lastEnd: the latest expires_at
// known, raised by every jit.granted read) and the audit stream has stopped
// growing, and until the prober has checked every grant's end; it returns
// the whole stream.
func drain(ctx context.Context, obs *observer, w *watcher, lastEnd time.Time, logf func(string, ...any)) ([]stored, error) {
	for _, k := range w.seen() {
		if k.expiresAt.After(lastEnd) {
			lastEnd = k.expiresAt
		}
	}
	if t := obs.lastExpiry(); t.After(lastEnd) {
		lastEnd = t
	}
	logf("drain: every grant ends by %s (in %s); then until the audit stream is quiet for %s",
		lastEnd.Format("15:04:05.000"), time.Until(lastEnd).Round(time.Second), quiet)
	deadline := time.Now().Add(drainLimit)
	var (
		evs        []stored
		next       uint64 = 1
		lastChange        = time.Now()
	)
	for {
		page, err := obs.read(ctx, next)
		if err != nil && !isTransient(err) {
			return nil, fmt.Errorf("read the audit stream: %w", err)
		}
		for _, e := range page {
			evs = append(evs, e)
			next = e.seq + 1
			if e.typ != events.TypeCheckpoint {
				lastChange = time.Now()
			}
			if e.typ == events.TypeGranted && e.expiresAt.After(lastEnd) {
				lastEnd = e.expiresAt
			}
		}
		now := time.Now()
		if now.After(lastEnd.Add(endMargin)) && now.Sub(lastChange) >= quiet && w.pr.pending() == 0 {
			return evs, nil
		}
		if now.After(deadline) {
			logf("drain: the audit stream still grows (or grants are still live) after %s; counting what is there", drainLimit)
			return evs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// isTransient is a read error worth trying again.
func isTransient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
