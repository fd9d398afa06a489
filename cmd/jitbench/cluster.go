package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentjit/jit/cmd/internal/jitdproc"
	"github.com/agentjit/jit/pkg/broker"
)

// pipeline measures auto-approve round trips (sequential) and grants per
// second (each concurrency) and sets them under prefix, as the single-node
// run's figures of the same names, with the CPU time per grant that the
// jitd processes pids spent together (jitd_cpu_ms_per_grant_c<N>).
func pipeline(ctx context.Context, c *client, p params, prefix string, rep *report, logf func(string, ...any), pids ...int) error {
	logf("%sauto-approve: %d sequential requests", prefix, p.seqN)
	if _, err := sequential(ctx, c, 50); err != nil {
		return err
	}
	lat, err := sequential(ctx, c, p.seqN)
	if err != nil {
		return err
	}
	rep.lat(prefix+"auto_approve", lat)
	for _, conc := range p.concurrency {
		logf("%sthroughput: %d agents for %s", prefix, conc, p.tputDur)
		cpu0, cpuErr := cpuOf(pids)
		rate, lat, err := throughput(ctx, c, conc, p.tputDur)
		if err != nil {
			return err
		}
		if cpu1, err := cpuOf(pids); err == nil && cpuErr == nil && len(pids) > 0 && len(lat) > 0 {
			rep.set(fmt.Sprintf("%sjitd_cpu_ms_per_grant_c%d", prefix, conc), ms(cpu1-cpu0)/float64(len(lat)), "ms",
				fmt.Sprintf("the user+system CPU time of the %d jitd processes over the run, per grant", len(pids)))
		}
		rep.set(fmt.Sprintf("%sgrants_per_second_c%d", prefix, conc), rate, "/s", "")
		rep.set(fmt.Sprintf("%sauto_approve_c%d_p50_ms", prefix, conc), lat.pct(50), "ms", "")
		rep.set(fmt.Sprintf("%sauto_approve_c%d_p99_ms", prefix, conc), lat.pct(99), "ms", "")
		if conc == p.concurrency[len(p.concurrency)-1] {
			rep.set(prefix+"grants_per_second", rate, "/s", "")
		}
	}
	return nil
}

// cpuOf sums the CPU time the processes pids have used.
func cpuOf(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		d, err := jitdproc.ProcCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// setLimit sets the broker's own figures under prefix.
func setLimit(rep *report, prefix string, lim limitResult) {
	rep.set(prefix+"js_sync_publish_p50_ms", lim.syncP50, "ms", "")
	rep.set(prefix+"js_sync_publish_p99_ms", lim.syncP99, "ms", "")
	rep.set(prefix+"js_sync_publish_per_second", lim.syncPerSec, "/s", "")
	rep.set(prefix+"js_async_publish_per_second", lim.asyncPerSec, "/s", "")
	rep.set(prefix+"kv_put_p50_ms", lim.kvP50, "ms", "")
	rep.set(prefix+"kv_put_p99_ms", lim.kvP99, "ms", "")
}

// setExpiry sets an expiry run's figures under prefix.
func setExpiry(rep *report, prefix string, ex expiryResult) {
	rep.set(prefix+"expiry_grants", float64(ex.n), "", "")
	rep.set(prefix+"expiry_event_lag_p50_ms", ex.lag.pct(50), "ms", "jit.revoked arrival − expires_at")
	rep.set(prefix+"expiry_event_lag_p99_ms", ex.lag.pct(99), "ms", "")
	rep.set(prefix+"expiry_event_lag_max_ms", ex.lag.max(), "ms", "")
	rep.set(prefix+"expiry_lost", float64(ex.lost), "", "")
	if ex.notStored > 0 {
		rep.set(prefix+"expiry_granted_not_stored", float64(ex.notStored), "", "jit.granted seen published, never stored: not a grant, not counted as lost")
	}
	rep.set(prefix+"enforcement_late_max_ms", math.Max(0, ms(ex.late)), "ms", "checker allowed after expires_at (0 = never)")
}

// runSyncAlways measures what --sync-always costs on one node: a fresh jitd
// that fsyncs every write, the broker's own figures and the pipeline's,
// under sync_always_.
func runSyncAlways(ctx context.Context, o options, rep *report) error {
	p := o.params
	logf := func(format string, args ...any) { fmt.Fprintf(o.log, "jitbench: "+format+"\n", args...) }
	dir, cfgPath, err := benchDir(o, "jitbench-sync-")
	if err != nil {
		return err
	}
	defer cleanup(o, dir)
	d, err := jitdproc.New(o.jitd, dir, cfgPath, false, o.memLimit)
	if err != nil {
		return err
	}
	d.NoAuth = o.noAuth
	d.Args = []string{"--sync-always"}
	logf("sync-always: one jitd --sync-always")
	if err := d.Start(30 * time.Second); err != nil {
		return err
	}
	defer func() { _ = d.Kill() }()
	c, err := newClient(d.NATSURL(), dir, o.noAuth)
	if err != nil {
		return err
	}
	defer c.close()
	lim, err := measureLimit(ctx, c.js, p.limitN, 1)
	if err != nil {
		return err
	}
	setLimit(rep, "sync_always_", lim)
	return pipeline(ctx, c, p, "sync_always_", rep, logf, d.Cmd.Process.Pid)
}

// benchDir makes a run's temporary directory with the generated
// configuration in it.
func benchDir(o options, pattern string) (string, string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", "", err
	}
	cfgPath := filepath.Join(dir, "jit.yaml")
	if err := os.WriteFile(cfgPath, []byte(benchConfig(o.params)), 0o644); err != nil {
		return "", "", err
	}
	return dir, cfgPath, nil
}

func cleanup(o options, dir string) {
	if o.keep {
		fmt.Fprintf(o.log, "jitbench: data directory %s (kept)\n", dir)
		return
	}
	_ = os.RemoveAll(dir)
}

// runCluster measures the pipeline on three jitd nodes forming one NATS
// cluster at three replicas, under cluster_: the broker's own figures at
// R3, auto-approve round trips and grants per second with agents spread
// over the nodes, expiry precision, and expiry precision while the node
// that leads the audit stream is killed with SIGKILL (or another than the
// observer's, when that one leads).
func runCluster(ctx context.Context, o options, rep *report) error {
	p := o.params
	logf := func(format string, args ...any) { fmt.Fprintf(o.log, "jitbench: "+format+"\n", args...) }
	dir, cfgPath, err := benchDir(o, "jitbench-cluster-")
	if err != nil {
		return err
	}
	defer cleanup(o, dir)
	nodes, err := jitdproc.NewCluster(o.jitd, dir, cfgPath, o.memLimit, o.noAuth)
	if err != nil {
		return err
	}
	logf("cluster: three jitd nodes at R3")
	t0 := time.Now()
	err = jitdproc.StartAll(nodes, 60*time.Second)
	defer func() {
		for _, n := range nodes {
			_ = n.Kill()
		}
	}()
	if err != nil {
		return err
	}
	rep.set("cluster_start_ms", ms(time.Since(t0)), "ms", "three nodes started at once to all serving")
	// The observer stays on node 1, which is never killed: a reconnect would
	// lose the events it follows.
	c, err := newClient(nodes[0].NATSURL(), filepath.Join(dir, "n1"), o.noAuth)
	if err != nil {
		return err
	}
	defer func() { c.close() }()
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.NATSURL())
	}
	c.agentURL = strings.Join(urls, ",")

	logf("cluster limit: raw JetStream publishes and KV puts at R3")
	lim, err := measureLimit(ctx, c.js, p.limitN, 3)
	if err != nil {
		return err
	}
	setLimit(rep, "cluster_", lim)
	chk, err := c.checker(ctx)
	if err != nil {
		return err
	}
	if err := chk.Start(ctx); err != nil {
		return err
	}
	defer chk.Stop()
	var pids []int
	for _, n := range nodes {
		pids = append(pids, n.Cmd.Process.Pid)
	}
	if err := pipeline(ctx, c, p, "cluster_", rep, logf, pids...); err != nil {
		return err
	}
	logf("cluster expiry: %d grants ending %s-%s after they are granted", p.expiryN, p.expiryMin, p.expiryMax)
	ex, err := expiry(ctx, c, chk, p.expiryN, p.expiryMin, p.expiryMax, 32)
	if err != nil {
		return err
	}
	setExpiry(rep, "cluster_", ex)
	logLate(logf, "cluster expiry", ex)

	victim, role := 2, "not a leader of the audit stream"
	if st, err := c.js.Stream(ctx, broker.AuditStream); err == nil && st.CachedInfo().Cluster != nil {
		for i := 1; i < len(nodes); i++ {
			if st.CachedInfo().Cluster.Leader == fmt.Sprintf("n%d", i+1) {
				victim, role = i, "the audit stream's leader"
			}
		}
	}
	n := p.scaleExpiryN
	logf("cluster node loss: %d grants ending 3-4 s after they are granted; n%d killed once they are", n, victim+1)
	ex, err = expiryWith(ctx, c, chk, n, 3*time.Second, 4*time.Second, 32, func() { _ = nodes[victim].Kill() })
	if err != nil {
		return err
	}
	setExpiry(rep, "cluster_node_killed_", ex)
	logLate(logf, "cluster node loss", ex)
	rep.notes["cluster_node_killed_expiry_event_lag_p99_ms"] = fmt.Sprintf("n%d, %s, SIGKILLed after the grants were made, before they ended", victim+1, role)
	return nil
}
