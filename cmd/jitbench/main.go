// Command jitbench measures the JIT pipeline against a fresh all-in-one
// jitd that it starts as a subprocess (so that jitd's memory is its own):
// auto-approve round trips and grants per second, expiry precision and
// enforcement, an expiry storm, guardrail to refusal, 100,000 live grants
// (memory, a restarted revoker's catch-up, check latency), and the broker's
// own publish and KV speed in the same run, which every pipeline figure is
// set against. It prints a table and writes the same figures as one JSON
// object. See BENCH.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/agentjit/jit/cmd/internal/jitdproc"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/rs/zerolog"
)

var nopLog = zerolog.Nop()

// params size a run.
type params struct {
	limitN               int
	seqN                 int
	tputDur              time.Duration
	concurrency          []int
	expiryN              int
	expiryMin, expiryMax time.Duration
	stormN               int
	guardAgents, guardK  int
	scaleN               int
	scaleExpiryN         int
	checkN               int
}

func fullParams() params {
	return params{
		limitN: 5000, seqN: 2000, tputDur: 5 * time.Second, concurrency: []int{1, 16, 256},
		expiryN: 2000, expiryMin: 2 * time.Second, expiryMax: 5 * time.Second,
		stormN: 10000, guardAgents: 200, guardK: 4,
		scaleN: 100_000, scaleExpiryN: 500, checkN: 200_000,
	}
}

func quickParams() params {
	return params{
		limitN: 300, seqN: 100, tputDur: time.Second, concurrency: []int{1, 16, 256},
		expiryN: 150, expiryMin: 1500 * time.Millisecond, expiryMax: 2500 * time.Millisecond,
		stormN: 300, guardAgents: 4, guardK: 2,
		scaleN: 2000, scaleExpiryN: 40, checkN: 10_000,
	}
}

func main() {
	fs := flag.NewFlagSet("jitbench", flag.ExitOnError)
	jitdBin := fs.String("jitd", defaultJitd(), "the jitd binary to benchmark")
	out := fs.String("out", "bench/results.json", "where to write the figures as JSON (empty: do not write)")
	quick := fs.Bool("quick", false, "a small run (seconds): a smoke test, not figures")
	scale := fs.Int("scale", 0, "live grants for the scale phase (default 100000; 2000 with --quick)")
	tput := fs.Duration("duration", 0, "how long each sustained-throughput run lasts (default 5s; 1s with --quick)")
	profile := fs.String("profile", "", "directory for jitd's CPU profile (during the 256-agent run) and heap profile (at scale)")
	keep := fs.Bool("keep", false, "keep the temporary data directory")
	memLimit := fs.String("jitd-memory-limit", "256MiB", "jitd's --memory-limit (Go's soft memory limit; empty: jitd's default, none)")
	noAuth := fs.Bool("no-auth", false, "run jitd with --insecure-no-auth and every client without credentials: the A/B of what isolation costs (BENCH.md)")
	noMetrics := fs.Bool("no-metrics", false, "run jitd with --no-metrics: the A/B of what the instrumentation costs (BENCH.md)")
	single := fs.Bool("single", true, "run the single-node figures (false: only the runs below)")
	cluster := fs.Bool("cluster", true, "then run the cluster figures (cluster_*): three jitd nodes at three replicas")
	syncAlways := fs.Bool("sync-always", true, "then run the single-node figures with jitd --sync-always (sync_always_*)")
	_ = fs.Parse(os.Args[1:])

	p := fullParams()
	if *quick {
		p = quickParams()
	}
	if *scale > 0 {
		p.scaleN = *scale
	}
	if *tput > 0 {
		p.tputDur = *tput
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := options{jitd: *jitdBin, params: p, quick: *quick, profileDir: *profile, keep: *keep, memLimit: *memLimit, noAuth: *noAuth, noMetrics: *noMetrics, log: os.Stderr}
	var rep *report
	var err error
	if *single {
		rep, err = run(ctx, o)
	} else {
		rep = newReport(*quick, p)
		rep.memLimit = *memLimit
	}
	if err == nil && *syncAlways {
		if err = runSyncAlways(ctx, o, rep); err != nil {
			err = fmt.Errorf("sync-always run: %w", err)
		}
	}
	if err == nil && *cluster {
		if err = runCluster(ctx, o, rep); err != nil {
			err = fmt.Errorf("cluster run: %w", err)
		}
	}
	if rep != nil {
		rep.print(os.Stdout)
		if *out != "" {
			if werr := rep.write(*out); werr != nil {
				fmt.Fprintf(os.Stderr, "jitbench: %v\n", werr)
				os.Exit(2)
			}
			fmt.Fprintf(os.Stdout, "\nwrote %s\n", *out)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "jitbench: %v\n", err)
		os.Exit(1)
	}
}

func defaultJitd() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "jitd")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "jitd"
}

type options struct {
	jitd       string
	params     params
	quick      bool
	profileDir string
	keep       bool
	memLimit   string // jitd's --memory-limit
	noAuth     bool   // jitd --insecure-no-auth: measure what isolation costs
	noMetrics  bool   // jitd --no-metrics: measure what the instrumentation costs
	log        io.Writer
}

// run is the whole benchmark. It returns the figures gathered so far even
// when a phase fails.
func run(ctx context.Context, o options) (*report, error) {
	p := o.params
	logf := func(format string, args ...any) { fmt.Fprintf(o.log, "jitbench: "+format+"\n", args...) }
	dir, err := os.MkdirTemp("", "jitbench-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		logf("data directory %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	cfgPath := filepath.Join(dir, "jit.yaml")
	if err := os.WriteFile(cfgPath, []byte(benchConfig(p)), 0o644); err != nil {
		return nil, err
	}
	if _, err := config.LoadFile(cfgPath); err != nil {
		return nil, fmt.Errorf("the generated configuration is refused: %w", err)
	}
	rep := newReport(o.quick, p)
	rep.memLimit = o.memLimit
	d, err := jitdproc.New(o.jitd, dir, cfgPath, o.profileDir != "", o.memLimit)
	if err != nil {
		return rep, err
	}
	d.NoAuth = o.noAuth
	if o.noMetrics {
		d.Args = append(d.Args, "--no-metrics")
	}
	if err := d.Start(30 * time.Second); err != nil {
		return rep, err
	}
	defer func() { _ = d.Kill() }()
	c, err := newClient(d.NATSURL(), dir, o.noAuth)
	if err != nil {
		return rep, err
	}
	defer func() { c.close() }()
	rss, _ := d.RSSMB()
	rep.set("rss_mb_idle", rss, "MiB", "")

	// The limit: the broker's own speed, same server, same run.
	logf("limit: raw JetStream publishes and KV puts")
	lim, err := measureLimit(ctx, c.js, p.limitN, 1)
	if err != nil {
		return rep, err
	}
	rep.limit = lim
	rep.set("js_sync_publish_p50_ms", lim.syncP50, "ms", "")
	rep.set("js_sync_publish_p99_ms", lim.syncP99, "ms", "")
	rep.set("js_sync_publish_per_second", lim.syncPerSec, "/s", "")
	rep.set("js_async_publish_per_second", lim.asyncPerSec, "/s", "")
	rep.set("kv_put_p50_ms", lim.kvP50, "ms", "")
	rep.set("kv_put_p99_ms", lim.kvP99, "ms", "")
	rep.set("kv_put_per_second", lim.kvPerSec, "/s", "")

	chk, err := c.checker(ctx)
	if err != nil {
		return rep, err
	}
	if err := chk.Start(ctx); err != nil {
		return rep, err
	}
	defer chk.Stop()

	logf("auto-approve: %d sequential requests", p.seqN)
	// Warm up connections, consumers and caches: every bench agent has
	// connected and been answered once before anything is timed, so that
	// with authentication a first connection's account setup (fetching and
	// building the agent's account on the server) is not counted as the
	// cost of a request (see BENCH.md, "What isolation costs").
	if _, _, err := throughput(ctx, c, benchAgents, 0); err != nil {
		return rep, err
	}
	if _, err := sequential(ctx, c, 50); err != nil {
		return rep, err
	}
	lat, err := sequential(ctx, c, p.seqN)
	if err != nil {
		return rep, err
	}
	rep.lat("auto_approve", lat)
	live := 50 + p.seqN

	for _, conc := range p.concurrency {
		logf("throughput: %d agents for %s", conc, p.tputDur)
		var prof chan error
		if conc == p.concurrency[len(p.concurrency)-1] && o.profileDir != "" {
			prof = make(chan error, 1)
			go func() {
				prof <- fetch(ctx, "http://"+d.HTTPAddr+fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(p.tputDur.Seconds()))),
					filepath.Join(o.profileDir, "cpu-throughput.pprof"))
			}()
		}
		cpu0, cpuErr := jitdproc.ProcCPU(d.Cmd.Process.Pid)
		rate, lat, err := throughput(ctx, c, conc, p.tputDur)
		if err != nil {
			return rep, err
		}
		if cpu1, err := jitdproc.ProcCPU(d.Cmd.Process.Pid); err == nil && cpuErr == nil && len(lat) > 0 {
			// CPU time per grant depends far less on what else runs on
			// the machine than grants per second do.
			rep.set(fmt.Sprintf("jitd_cpu_ms_per_grant_c%d", conc), ms(cpu1-cpu0)/float64(len(lat)), "ms", "jitd's user+system CPU time over the run, per grant")
		}
		if prof != nil {
			if err := <-prof; err != nil {
				logf("cpu profile: %v", err)
			}
		}
		live += len(lat)
		rep.set(fmt.Sprintf("grants_per_second_c%d", conc), rate, "/s", "")
		rep.set(fmt.Sprintf("auto_approve_c%d_p50_ms", conc), lat.pct(50), "ms", "")
		rep.set(fmt.Sprintf("auto_approve_c%d_p99_ms", conc), lat.pct(99), "ms", "")
		if conc == p.concurrency[len(p.concurrency)-1] {
			rep.set("grants_per_second", rate, "/s", "")
		}
	}

	logf("expiry: %d grants ending %s-%s after they are granted", p.expiryN, p.expiryMin, p.expiryMax)
	ex, err := expiry(ctx, c, chk, p.expiryN, p.expiryMin, p.expiryMax, 32)
	if err != nil {
		return rep, err
	}
	rep.expiry("", ex)
	logLate(logf, "expiry", ex)

	logf("expiry storm: %d grants ending in the same second", p.stormN)
	st, err := storm(ctx, c, p.stormN, 256, rep.val("grants_per_second"))
	if err != nil {
		return rep, err
	}
	rep.set("expiry_storm_grants", float64(st.n), "", "")
	rep.set("expiry_storm_last_revocation_ms", ms(st.lastAfterFinal), "ms", "last jit.revoked after the latest expires_at")
	rep.set("expiry_storm_lag_p99_ms", st.lag.pct(99), "ms", "")
	rep.set("expiry_storm_lost", float64(st.lost), "", "")

	logf("settle: the storm's expiry markers handled")
	if err := settle(ctx, c, st.lastExpiry); err != nil {
		return rep, err
	}

	logf("guardrail: %d agents with %d grants each", p.guardAgents, p.guardK)
	gr, err := guardrails(ctx, c, chk, p.guardAgents, p.guardK)
	if err != nil {
		return rep, err
	}
	rep.set("guardrail_to_refusal_p50_ms", gr.total.pct(50), "ms", "every grant revoked and the checker refuses")
	rep.set("guardrail_to_refusal_p99_ms", gr.total.pct(99), "ms", "")
	rep.set("guardrail_checker_refusal_p99_ms", gr.refusal.pct(99), "ms", "")
	rep.set("guardrail_all_revoked_p99_ms", gr.revoked.pct(99), "ms", "")
	rep.set("guardrail_lost", float64(gr.lost), "", "")

	// Scale: fill up to scaleN live grants.
	bulk := max(0, p.scaleN-live)
	logf("scale: %d live grants through the pipeline, %d more written to KV in bulk", live, bulk)
	if bulk > 0 {
		rate, err := bulkGrants(ctx, c, bulk, "bulk")
		if err != nil {
			return rep, err
		}
		rep.set("bulk_grant_writes_per_second", rate, "/s", "lease + grant key, asynchronous")
	}
	// Let the revoker and the checker take them in.
	for deadline := time.Now().Add(2 * time.Minute); len(chk.Grants("")) < p.scaleN*95/100 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	rep.set("live_grants", float64(len(chk.Grants(""))), "", "")
	logf("scale: expiry of %d grants with %d live", p.scaleExpiryN, p.scaleN)
	ex, err = expiry(ctx, c, chk, p.scaleExpiryN, p.expiryMin/2+500*time.Millisecond, p.expiryMin+500*time.Millisecond, 32)
	if err != nil {
		return rep, err
	}
	rep.set("expiry_event_lag_p50_at_100k_ms", ex.lag.pct(50), "ms", "")
	rep.set("expiry_event_lag_p99_at_100k_ms", ex.lag.pct(99), "ms", "")
	rep.set("expiry_lost_at_100k", float64(ex.lost), "", "")
	logLate(logf, "scale expiry", ex)
	rep.set("enforcement_late_max_at_100k_ms", math.Max(0, ms(ex.late)), "ms", "")
	runtime.GC()
	time.Sleep(time.Second)
	rss, _ = d.RSSMB()
	hwm, _ := jitdproc.ProcStatusMB(d.Cmd.Process.Pid, "VmHWM:")
	limitNote := "jitd without a memory limit"
	if o.memLimit != "" {
		limitNote = "jitd --memory-limit " + o.memLimit
	}
	rep.set("rss_mb_at_100k_grants", rss, "MiB", limitNote)
	rep.set("rss_peak_mb", hwm, "MiB", "")
	if o.profileDir != "" {
		if err := fetch(ctx, "http://"+d.HTTPAddr+"/debug/pprof/heap", filepath.Join(o.profileDir, "heap-100k.pprof")); err != nil {
			logf("heap profile: %v", err)
		}
	}
	cl := checkLatency(chk, p.checkN)
	rep.set("check_p50_ms", cl.pct(50), "ms", "Allowed() with 100k live grants")
	rep.set("check_p99_ms", cl.pct(99), "ms", "")
	chk2, _ := c.checker(ctx)
	t0 := time.Now()
	if err := chk2.Start(ctx); err == nil {
		rep.set("checker_start_ms", ms(time.Since(t0)), "ms", "a new checker loads every live grant")
		chk2.Stop()
	}

	logf("restart: SIGTERM jitd and start it again on the same data directory")
	chk.Stop()
	c.close()
	down, err := d.Stop(60 * time.Second)
	if err != nil {
		return rep, fmt.Errorf("stopping jitd: %w", err)
	}
	rep.set("jitd_stop_ms", ms(down), "ms", "")
	d.Reset()
	restored := d.Wait(jitdproc.MsgRestored)
	d.Config = "" // keep the stored configuration
	if err := d.Start(2 * time.Minute); err != nil {
		return rep, err
	}
	rep.set("jitd_restart_ready_ms", ms(d.SeenAt(jitdproc.MsgRunning).Sub(d.Started)), "ms", "process start to serving")
	select {
	case at := <-restored:
		rep.set("revoker_restore_ms", ms(at.Sub(d.Started)), "ms", "process start to every timer restored")
		if l := d.Line(jitdproc.MsgRestored); l != nil {
			if n, ok := l["leases"].(float64); ok {
				rep.set("revoker_restored_leases", n, "", "")
			}
		}
	case <-time.After(2 * time.Minute):
		return rep, fmt.Errorf("the restarted revoker did not restore its leases within 2 minutes")
	}
	c, err = newClient(d.NATSURL(), dir, o.noAuth)
	if err != nil {
		return rep, err
	}
	if chk, err = c.checker(ctx); err != nil {
		return rep, err
	}
	if err := chk.Start(ctx); err != nil {
		return rep, err
	}
	ex, err = expiry(ctx, c, chk, p.scaleExpiryN, p.expiryMin/2+500*time.Millisecond, p.expiryMin+500*time.Millisecond, 32)
	if err != nil {
		return rep, err
	}
	rep.set("expiry_event_lag_p99_after_restart_ms", ex.lag.pct(99), "ms", "")
	rep.set("expiry_lost_after_restart", float64(ex.lost), "", "")
	logLate(logf, "expiry after restart", ex)
	rss, _ = d.RSSMB()
	rep.set("rss_mb_after_restart", rss, "MiB", "")
	return rep, nil
}

// fetch saves url's body (a pprof profile) to path.
func fetch(ctx context.Context, url, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checker makes a checker as a resource server runs one: with the
// checker's credential, the configuration followed without a consumer.
func (c *client) checker(ctx context.Context) (*checker.Checker, error) {
	js, err := c.jsAs(auth.DefaultChecker)
	if err != nil {
		return nil, err
	}
	src, err := config.Follow(ctx, js, nopLog)
	if err != nil {
		return nil, err
	}
	return checker.New(js, src), nil
}

// Agents of the generated configuration.
const (
	benchAgents = 256
	expAgents   = 100
	expPerms    = 20
	permWrite   = "data:write"
)

// benchGuard is the guardrail source of the generated configuration.
const benchGuard = "bench-guard"

func benchAgent(i int) string { return fmt.Sprintf("bench-%04d", i%benchAgents) }
func guardAgent(i int) string { return fmt.Sprintf("guard-%03d", i) }

// expiryPair is the i-th (agent, permission) pair of the expiry agents.
func expiryPair(i int) (string, string) {
	i %= expAgents * expPerms
	return fmt.Sprintf("exp-%03d", i/expPerms), fmt.Sprintf("exp:p%02d", i%expPerms)
}

// benchConfig is the configuration jitd runs with: 256 auto-approved agents
// for the pipeline runs, 100 agents with 20 permissions each for the expiry
// runs (one grant per agent and permission, so that a check is about one
// grant), and one agent per guardrail firing.
func benchConfig(p params) string {
	var b strings.Builder
	b.WriteString("timezone: UTC\napproval_window: 15m\nagents:\n")
	for i := range benchAgents {
		fmt.Fprintf(&b, "  - {id: %s, owner: bench, base: [data:read], eligible: [%s], max_jit_duration: 24h}\n", benchAgent(i), permWrite)
	}
	perms := make([]string, expPerms)
	for i := range perms {
		_, perms[i] = expiryPair(i)
	}
	for i := range expAgents {
		fmt.Fprintf(&b, "  - {id: exp-%03d, owner: bench, eligible: [%s], max_jit_duration: 24h}\n", i, strings.Join(perms, ", "))
	}
	for i := range max(1, p.guardAgents) {
		fmt.Fprintf(&b, "  - {id: %s, owner: bench, base: [data:read], eligible: [%s], max_jit_duration: 24h}\n", guardAgent(i), permWrite)
	}
	b.WriteString("rules:\n  - name: bench-auto\n    permissions: [\"*\"]\n    mode: auto-approve\n")
	// The guardrail phase fires through the ingress, as a guardrail source.
	b.WriteString("guardrails:\n  - name: bench-guardrail\nguardrail_sources:\n  - name: " + benchGuard + "\n    guardrails: [bench-guardrail]\n")
	return b.String()
}

// report is the figures of a run, in the order they were taken.
type report struct {
	keys     []string
	vals     map[string]float64
	units    map[string]string
	notes    map[string]string
	limit    limitResult
	quick    bool
	memLimit string
	params   params
	start    time.Time
}

func newReport(quick bool, p params) *report {
	return &report{vals: map[string]float64{}, units: map[string]string{}, notes: map[string]string{}, quick: quick, params: p, start: time.Now()}
}

func (r *report) set(key string, v float64, unit, note string) {
	if _, ok := r.vals[key]; !ok {
		r.keys = append(r.keys, key)
	}
	r.vals[key] = round(v)
	r.units[key] = unit
	if note != "" {
		r.notes[key] = note
	}
}

func (r *report) val(key string) float64 { return r.vals[key] }

func (r *report) lat(prefix string, d dist) {
	r.set(prefix+"_p50_ms", d.pct(50), "ms", "")
	r.set(prefix+"_p99_ms", d.pct(99), "ms", "")
	r.set(prefix+"_p999_ms", d.pct(99.9), "ms", "")
}

func (r *report) expiry(suffix string, ex expiryResult) {
	r.set("expiry_grants"+suffix, float64(ex.n), "", "")
	r.set("expiry_event_lag_p50_ms"+suffix, ex.lag.pct(50), "ms", "jit.revoked arrival − expires_at")
	r.set("expiry_event_lag_p99_ms"+suffix, ex.lag.pct(99), "ms", "")
	r.set("expiry_event_lag_max_ms"+suffix, ex.lag.max(), "ms", "")
	r.set("expiry_lost"+suffix, float64(ex.lost), "", "")
	if ex.notStored > 0 {
		r.set("expiry_granted_not_stored"+suffix, float64(ex.notStored), "", "jit.granted seen published, never stored: not a grant, not counted as lost")
	}
	r.set("enforcement_late_max_ms"+suffix, math.Max(0, ms(ex.late)), "ms", "checker allowed after expires_at (0 = never)")
	r.set("enforcement_first_refusal_p99_ms"+suffix, ex.firstRefusal.pct(99), "ms", "probe granularity, 200 µs polls")
	r.set("enforcement_probed_grants"+suffix, float64(ex.probed), "", "")
}

// vsLimit sets a figure against the broker's own limit: a rate as a
// fraction of asynchronous publishes per second, a latency as a multiple of
// one synchronous publish.
func (r *report) vsLimit(key string) (float64, bool) {
	v := r.vals[key]
	switch {
	case strings.HasPrefix(key, "cluster_") || strings.HasPrefix(key, "sync_always_"):
		// Set against the single node's limit they would mislead: their
		// own js_ figures are beside them.
		return 0, false
	case strings.HasPrefix(key, "js_") || strings.HasPrefix(key, "kv_put"):
		return 0, false
	case r.units[key] == "/s" && r.limit.asyncPerSec > 0:
		return v / r.limit.asyncPerSec, true
	case r.units[key] == "ms" && r.limit.syncP50 > 0 && !strings.HasPrefix(key, "jitd_") && !strings.HasPrefix(key, "revoker_restore") && !strings.HasPrefix(key, "checker_start"):
		return v / r.limit.syncP50, true
	}
	return 0, false
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n%-42s %14s %-5s %12s  %s\n", "figure", "value", "unit", "vs limit", "note")
	fmt.Fprintln(w, strings.Repeat("-", 100))
	for _, k := range r.keys {
		rel := ""
		if f, ok := r.vsLimit(k); ok {
			if r.units[k] == "/s" {
				rel = fmt.Sprintf("%.3f", f)
			} else {
				rel = fmt.Sprintf("%.1fx", f)
			}
		}
		fmt.Fprintf(w, "%-42s %14.3f %-5s %12s  %s\n", k, r.vals[k], r.units[k], rel, r.notes[k])
	}
	fmt.Fprintln(w, "\nvs limit: a rate as a fraction of raw JetStream async publishes/s; a latency as a multiple of one raw synchronous publish (p50).")
}

func (r *report) write(path string) error {
	m := map[string]any{}
	for _, k := range r.keys {
		v := r.vals[k]
		if math.IsNaN(v) {
			m[k] = nil
			continue
		}
		m[k] = v
		if f, ok := r.vsLimit(k); ok {
			m[k+"_vs_limit"] = round(f)
		}
	}
	host, _ := os.Hostname()
	m["run"] = map[string]any{
		"quick": r.quick, "started": r.start.UTC().Format(time.RFC3339), "seconds": round(time.Since(r.start).Seconds()),
		"cpus": runtime.NumCPU(), "go": runtime.Version(), "host": host, "loadavg": loadavg(),
		"live_grants_target": r.params.scaleN, "jitd_memory_limit": r.memLimit,
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
