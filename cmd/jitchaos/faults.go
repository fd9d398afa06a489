package main

import (
	"fmt"
	"syscall"
	"time"

	"github.com/agentjit/jit/cmd/internal/jitdproc"
)

// Fault kinds.
const (
	faultKill = "kill" // SIGKILL, then a restart on the same data directory
	faultStop = "stop" // SIGSTOP, then SIGCONT
	// faultCut cuts a cluster node off from the others (a minority
	// partition, netns.go), then joins it again.
	faultCut = "partition"
)

// fault is one fault as it happened.
type fault struct {
	kind string
	at   time.Time // the signal was sent
	// ready is when jitd serves again: "jitd running" logged by the
	// restarted process, or the SIGCONT.
	ready time.Time
	// node and role, in a cluster round: which node the signal went to,
	// and why it was that one (roleMeta, roleAudit).
	node, role string
	// starts is how many times a killed cluster node was started before it
	// ran again (1: at once).
	starts int
	// routesDropped, for a stop in a cluster round: before the SIGCONT,
	// no other node still had a route to the stopped one (it stayed
	// stopped past the routes' ping time-out and had to rejoin).
	routesDropped *bool
	// minorityStaleMS, for a partition: from the cut to a checker that
	// reaches only the cut node refusing grants as stale (-1: it never
	// did before the heal); minorityFresh, whether it counted grants
	// again after the heal.
	minorityStaleMS *float64
	minorityFresh   *bool
}

// plan orders the faults of a round: half the kills (rounded up), then the
// stops, then the other kills, so that a stop falls between crashes.
func plan(kills, stops int) []string {
	var out []string
	first := (kills + 1) / 2
	for range first {
		out = append(out, faultKill)
	}
	for range stops {
		out = append(out, faultStop)
	}
	for range kills - first {
		out = append(out, faultKill)
	}
	return out
}

// minGap is the least time between the end of a fault and the next.
const minGap = time.Second

// inject runs the planned faults against d, the i-th at about
// start + (i+1)·duration/(n+1), never sooner than minGap after the previous
// one ended. It returns the faults done; an error stops it (jitd did not
// come back).
func inject(d *jitdproc.Jitd, p params, start time.Time, quit <-chan struct{}, logf func(string, ...any)) ([]fault, error) {
	kinds := plan(p.kills, p.stops)
	var done []fault
	var last time.Time
	for i, kind := range kinds {
		at := start.Add(time.Duration(i+1) * p.duration / time.Duration(len(kinds)+1))
		if !last.IsZero() && at.Before(last.Add(minGap)) {
			at = last.Add(minGap)
		}
		select {
		case <-quit:
			return done, nil
		case <-time.After(time.Until(at)):
		}
		f := fault{kind: kind}
		switch kind {
		case faultKill:
			logf("SIGKILL jitd (%d of %d faults); restart in %s", i+1, len(kinds), p.down)
			f.at = time.Now()
			_ = d.Kill()
			time.Sleep(time.Until(f.at.Add(p.down)))
			d.Reset()
			d.Config = "" // the stored configuration
			if err := d.Start(2 * time.Minute); err != nil {
				return done, fmt.Errorf("restart after SIGKILL: %w", err)
			}
			f.ready = d.SeenAt(jitdproc.MsgRunning)
			logf("jitd running again %s after the kill", f.ready.Sub(f.at).Round(time.Millisecond))
		case faultStop:
			logf("SIGSTOP jitd (%d of %d faults) for %s", i+1, len(kinds), p.stopFor)
			f.at = time.Now()
			if err := d.Signal(syscall.SIGSTOP); err != nil {
				return done, err
			}
			time.Sleep(time.Until(f.at.Add(p.stopFor)))
			if err := d.Signal(syscall.SIGCONT); err != nil {
				return done, err
			}
			f.ready = time.Now()
		}
		done = append(done, f)
		last = f.ready
	}
	return done, nil
}
