package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/agentjit/jit/cmd/internal/jitdproc"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Roles of the node a cluster fault hits.
const (
	roleMeta  = "meta_leader"  // leads the JetStream meta group
	roleAudit = "audit_leader" // leads the audit stream
)

// leaders finds which node leads what, by the servers' own answers: the
// meta group's leader from a JetStream report of the system account, the
// audit stream's from its stream info (as the administrator).
type leaders struct {
	sys      *nats.Conn
	sysCreds string
	admin    jetstream.JetStream
	nodes    []*jitdproc.Jitd
}

func newLeaders(url, keysDir string, admin *nats.Conn, nodes []*jitdproc.Jitd) (*leaders, error) {
	store, err := auth.OpenStore(keysDir)
	if err != nil {
		return nil, err
	}
	sysCreds, err := store.SystemCreds()
	if err != nil {
		return nil, err
	}
	sys, err := nats.Connect(url, nats.UserCredentials(sysCreds), nats.Name("jitchaos system"),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("system connection: %w", err)
	}
	js, err := jetstream.New(admin)
	if err != nil {
		sys.Close()
		return nil, err
	}
	return &leaders{sys: sys, sysCreds: sysCreds, admin: js, nodes: nodes}, nil
}

func (l *leaders) close() { l.sys.Close() }

// of returns the index of the node that has role, asking until one
// answers (at most 20 s): a leader is being elected after a fault.
func (l *leaders) of(role string) (int, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		name, err := l.name(role)
		if err == nil {
			for i, n := range l.nodes {
				if n.Name() == name {
					return i, nil
				}
			}
			err = fmt.Errorf("%s is %q, not a node of the round", role, name)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("who is the %s: %w", role, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (l *leaders) name(role string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	switch role {
	case roleAudit:
		st, err := l.admin.Stream(ctx, broker.AuditStream)
		if err != nil {
			return "", err
		}
		if c := st.CachedInfo().Cluster; c != nil && c.Leader != "" {
			return c.Leader, nil
		}
		return "", fmt.Errorf("the audit stream has no leader")
	default:
		m, err := l.sys.RequestWithContext(ctx, "$SYS.REQ.SERVER.PING.JSZ", nil)
		if err != nil {
			return "", err
		}
		var r struct {
			Data struct {
				Meta *struct {
					Leader string `json:"leader"`
				} `json:"meta_cluster"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return "", err
		}
		if r.Data.Meta == nil || r.Data.Meta.Leader == "" {
			return "", fmt.Errorf("no meta leader known")
		}
		return r.Data.Meta.Leader, nil
	}
}

// maxStarts bounds the starts of a killed node.
const maxStarts = 5

// clusterPlan orders a cluster round's faults: SIGKILL the meta leader,
// SIGSTOP the audit stream's leader, SIGKILL the audit stream's leader;
// then again from the start for more kills and stops; last, with
// partition, cut the audit stream's leader off from the others.
func clusterPlan(kills, stops int, partition bool) []fault {
	var out []fault
	for k, s := 0, 0; k < kills || s < stops; {
		if k < kills {
			out = append(out, fault{kind: faultKill, role: roleMeta})
			k++
		}
		if s < stops {
			out = append(out, fault{kind: faultStop, role: roleAudit})
			s++
		}
		if k < kills {
			out = append(out, fault{kind: faultKill, role: roleAudit})
			k++
		}
	}
	if partition {
		out = append(out, fault{kind: faultCut, role: roleAudit})
	}
	return out
}

// injectCluster runs the planned faults against the nodes, spread as
// inject spreads them, each on the node that has the fault's role at that
// moment. A killed node is started again after p.down on its data
// directory; a stopped one continued after p.stopFor.
func injectCluster(nodes []*jitdproc.Jitd, l *leaders, lab *netLab, creds string, p params, start time.Time, quit <-chan struct{}, logf func(string, ...any)) ([]fault, error) {
	planned := clusterPlan(p.kills, p.stops, lab != nil)
	var done []fault
	var last time.Time
	for i, f := range planned {
		at := start.Add(time.Duration(i+1) * p.duration / time.Duration(len(planned)+1))
		if !last.IsZero() && at.Before(last.Add(minGap)) {
			at = last.Add(minGap)
		}
		select {
		case <-quit:
			return done, nil
		case <-time.After(time.Until(at)):
		}
		idx, err := l.of(f.role)
		if err != nil {
			return done, err
		}
		d := nodes[idx]
		f.node = d.Name()
		switch f.kind {
		case faultKill:
			logf("SIGKILL %s, the %s (%d of %d faults); restart in %s", f.node, f.role, i+1, len(planned), p.down)
			f.at = time.Now()
			_ = d.Kill()
			time.Sleep(time.Until(f.at.Add(p.down)))
			d.Config = ""
			// As a supervisor would (restart: unless-stopped): a node
			// started while the others still elect the leaders of what it
			// led can give up at start (a read of the audit stream times
			// out) and exit 2.
			for f.starts = 1; ; f.starts++ {
				d.Reset()
				err := d.Start(2 * time.Minute)
				if err == nil {
					break
				}
				if f.starts == maxStarts {
					return done, fmt.Errorf("restart %s after SIGKILL, %d attempts: %w", f.node, f.starts, err)
				}
				logf("%s exited at start (%v); starting it again", f.node, err)
			}
			f.ready = d.SeenAt(jitdproc.MsgRunning)
			logf("%s running again %s after the kill", f.node, f.ready.Sub(f.at).Round(time.Millisecond))
		case faultCut:
			if err := partition(lab, idx, d, creds, l, p.partitionFor, &f, logf); err != nil {
				return done, err
			}
		case faultStop:
			logf("SIGSTOP %s, the %s (%d of %d faults) for %s", f.node, f.role, i+1, len(planned), p.stopFor)
			f.at = time.Now()
			if err := d.Signal(syscall.SIGSTOP); err != nil {
				return done, err
			}
			time.Sleep(time.Until(f.at.Add(p.stopFor)))
			dropped, err := l.routesDroppedTo(f.node)
			if err != nil {
				logf("could not ask the other nodes for their routes: %v", err)
			} else {
				f.routesDropped = &dropped
				logf("before SIGCONT: the other nodes' routes to %s closed: %v", f.node, dropped)
			}
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

// clusterHome is where a cluster round's keys and credentials are: node
// 1's data directory.
func clusterHome(dir string) string { return filepath.Join(dir, "n1") }

// routesDroppedTo asks every other node, on a system connection of its
// own (the round's may use the stopped node), for its routes (ROUTEZ), and
// reports whether none of them still has one to node name.
func (l *leaders) routesDroppedTo(name string) (bool, error) {
	for _, n := range l.nodes {
		if n.Name() == name {
			continue
		}
		has, err := l.routesOf(n.NATSURL(), name)
		if err != nil {
			return false, fmt.Errorf("%s: %w", n.Name(), err)
		}
		if has {
			return false, nil
		}
	}
	return true, nil
}

// routesOf reports whether the server at url has a route to node name.
func (l *leaders) routesOf(url, name string) (bool, error) {
	nc, err := nats.Connect(url, nats.UserCredentials(l.sysCreds), nats.Name("jitchaos routez"), nats.Timeout(time.Second))
	if err != nil {
		return false, err
	}
	defer nc.Close()
	m, err := nc.Request("$SYS.REQ.SERVER."+nc.ConnectedServerId()+".ROUTEZ", nil, 2*time.Second)
	if err != nil {
		return false, err
	}
	var r struct {
		Data struct {
			Routes []struct {
				RemoteName string `json:"remote_name"`
			} `json:"routes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, err
	}
	for _, rt := range r.Data.Routes {
		if rt.RemoteName == name {
			return true, nil
		}
	}
	return false, nil
}

// partition cuts node idx (d) off from the other nodes for p, with a
// checker that reaches only that node watching, then joins it again: the
// fault's routesDropped (before the heal), minorityStaleMS and
// minorityFresh say what the others and the checker saw.
func partition(lab *netLab, idx int, d *jitdproc.Jitd, creds string, l *leaders, p time.Duration, f *fault, logf func(string, ...any)) error {
	chk, stopChk, err := minorityChecker(d.NATSURL(), creds)
	if err != nil {
		return fmt.Errorf("minority checker on %s: %w", d.Name(), err)
	}
	defer stopChk()
	logf("cut %s, the %s, off from the other nodes for %s", f.node, f.role, p)
	f.at = time.Now()
	if err := lab.cut(idx+1, true); err != nil {
		_ = lab.cut(idx+1, false)
		return err
	}
	stale := -1.0
	for heal := f.at.Add(p); time.Now().Before(heal); time.Sleep(50 * time.Millisecond) {
		if stale < 0 && chk.Stale() {
			stale = ms(time.Since(f.at))
			logf("the checker that reaches only %s refuses grants as stale %.0f ms after the cut", f.node, stale)
		}
	}
	f.minorityStaleMS = &stale
	if dropped, err := l.routesDroppedTo(f.node); err != nil {
		logf("could not ask the other nodes for their routes: %v", err)
	} else {
		f.routesDropped = &dropped
		logf("before the heal: the other nodes' routes to %s closed: %v", f.node, dropped)
	}
	if err := lab.cut(idx+1, false); err != nil {
		return err
	}
	f.ready = time.Now()
	fresh := false
	for end := f.ready.Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !chk.Stale() {
			fresh = true
			break
		}
	}
	f.minorityFresh = &fresh
	logf("healed; the minority's checker fresh again: %v (%s after the heal)", fresh, time.Since(f.ready).Round(time.Millisecond))
	return nil
}

// minorityChecker is a checker with the checker's credential connected to
// url alone (it never moves to another node).
func minorityChecker(url, creds string) (*checker.Checker, func(), error) {
	opts, err := auth.ClientOptions{Creds: filepath.Join(creds, auth.DefaultChecker.CredsFile())}.NATSOptions()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Name("jitchaos minority checker"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.IgnoreDiscoveredServers())...)
	if err != nil {
		return nil, nil, err
	}
	js, err := auth.JetStream(nc, auth.DefaultChecker, true)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	chk := checker.New(js, nil)
	// Start's context bounds the watches too: Stop ends them.
	if err := chk.Start(context.Background()); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return chk, func() { chk.Stop(); nc.Close() }, nil
}
