// Command jitchaos is the crash-safety experiment of issue 15, repeatable:
// it starts a fresh all-in-one jitd as a subprocess, runs agents that
// request short grants as fast as they can (each request with its own
// client-chosen id, retried with that id until accepted, and followed to
// its outcome on the agent's own feed), and meanwhile kills jitd with
// SIGKILL and restarts it on the same data directory, and stops it once
// with SIGSTOP. Then it lets every grant end, reads the whole audit stream
// and counts what a crash must never do: a request left unanswered, a grant
// lost, doubled, unannounced or announced after its end, a revocation lost
// or doubled, a permission usable after its end. It prints a table and
// writes the counts under "single_node" in a JSON file (chaos/README.md),
// and exits 1 if any count is not 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/embedded"
)

// params size a round.
type params struct {
	agents         int
	kills, stops   int
	duration       time.Duration   // how long the load runs (at least until the last fault is over)
	down           time.Duration   // from SIGKILL to the restart
	stopFor        time.Duration   // from SIGSTOP to SIGCONT
	partitionFor   time.Duration   // a cluster round's partition: from the cut to the heal (0: none)
	grantDurations []time.Duration // what the agents ask for, in turn
	outcomeTimeout time.Duration   // how long an agent waits for an outcome before it moves on
}

func fullParams() params {
	return params{
		agents: 32, kills: 3, stops: 1, duration: 60 * time.Second,
		down: 3 * time.Second, stopFor: 5 * time.Second,
		grantDurations: []time.Duration{2 * time.Second, 5 * time.Second, 30 * time.Second},
		outcomeTimeout: 40 * time.Second,
	}
}

func quickParams() params {
	return params{
		agents: 8, kills: 1, stops: 1, duration: 12 * time.Second,
		down: 3 * time.Second, stopFor: 5 * time.Second,
		grantDurations: []time.Duration{2 * time.Second, 3 * time.Second, 5 * time.Second},
		outcomeTimeout: 10 * time.Second,
	}
}

// durationsFlag is a comma-separated list of durations.
type durationsFlag []time.Duration

func (d *durationsFlag) String() string {
	var s []string
	for _, v := range *d {
		s = append(s, v.String())
	}
	return strings.Join(s, ",")
}

func (d *durationsFlag) Set(v string) error {
	var out []time.Duration
	for _, f := range strings.Split(v, ",") {
		x, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		if x < time.Second {
			return fmt.Errorf("grant duration %s: at least 1s", x)
		}
		out = append(out, x)
	}
	if len(out) == 0 {
		return errors.New("no durations")
	}
	*d = out
	return nil
}

func main() {
	fs := flag.NewFlagSet("jitchaos", flag.ExitOnError)
	jitdBin := fs.String("jitd", defaultJitd(), "the jitd binary to run")
	out := fs.String("out", "chaos/results.json", "the JSON file to write \"single_node\" into, keeping its other keys (empty: do not write)")
	quick := fs.Bool("quick", false, "a small round (8 agents, 1 kill, 1 stop, 12 s of load, grants of 2-5 s): a smoke test, not the experiment")
	agents := fs.Int("agents", 0, "agents, each with its own connection and credential (default 32; 8 with --quick)")
	kills := fs.Int("kills", -1, "SIGKILLs of jitd, each restarted after --down (default 3; 1 with --quick)")
	stops := fs.Int("stops", -1, "SIGSTOPs of jitd, each continued after --stop-for (default 1)")
	duration := fs.Duration("duration", 0, "how long the load runs; the faults are spread over it (default 60s; 12s with --quick)")
	down := fs.Duration("down", 0, "how long jitd stays dead after a SIGKILL (default 3s)")
	stopFor := fs.Duration("stop-for", 0, "how long jitd stays stopped after a SIGSTOP (default 5s)")
	var grants durationsFlag
	fs.Var(&grants, "grant-durations", "the grant durations the agents ask for, in turn (default 2s,5s,30s; 2s,3s,5s with --quick)")
	outcome := fs.Duration("outcome-timeout", 0, "how long an agent waits for its request's outcome before it gives up on it (default 40s; 10s with --quick)")
	keep := fs.Bool("keep", false, "keep the temporary data directory (jitd.log, the JetStream store)")
	cluster := fs.Bool("cluster", false, "the cluster round: three jitd nodes at R3 (jitdproc.ClusterArgs); SIGKILL the JetStream meta leader, SIGSTOP and then SIGKILL the audit stream's leader; results under \"cluster\"")
	part := fs.Bool("partition", true, "in the cluster round, last cut the audit stream's leader off from the other nodes for --partition-for (each node in a network namespace of its own: needs root and ip; skipped, and said so, without them)")
	partFor := fs.Duration("partition-for", 20*time.Second, "how long the cluster round's partition lasts")
	_ = fs.Parse(os.Args[1:])

	p := fullParams()
	if *quick {
		p = quickParams()
	}
	if *agents > 0 {
		p.agents = *agents
	}
	if *kills >= 0 {
		p.kills = *kills
	}
	if *stops >= 0 {
		p.stops = *stops
	}
	if *duration > 0 {
		p.duration = *duration
	}
	if *down > 0 {
		p.down = *down
	}
	if *stopFor > 0 {
		p.stopFor = *stopFor
	}
	if len(grants) > 0 {
		p.grantDurations = grants
	}
	if *outcome > 0 {
		p.outcomeTimeout = *outcome
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cluster && *kills < 0 && !*quick {
		p.kills = 2 // the meta leader, then the audit stream's
	}
	if *cluster && *stopFor == 0 {
		// Long enough that the other nodes close their routes to the
		// stopped one (issue 11: longer than the routes' ping timeout),
		// which must then rejoin.
		p.stopFor = embedded.RouteStaleAfter + 4*time.Second
	}
	if *cluster && *outcome == 0 {
		// A request a killed node held is redelivered after the ack wait
		// (broker.DefaultAckWait), and an agent on a node cut off sees an
		// outcome stored meanwhile only after the heal (--partition-for):
		// the agents wait longer than both.
		p.outcomeTimeout = max(p.outcomeTimeout, 40*time.Second)
	}
	if *cluster && *part {
		if err := labUnavailable(); err != nil {
			fmt.Fprintf(os.Stderr, "jitchaos: no partition in this round: %v\n", err)
		} else {
			p.partitionFor = *partFor
		}
	}
	res, err := run(ctx, options{jitd: *jitdBin, params: p, quick: *quick, keep: *keep, cluster: *cluster, log: os.Stderr})
	key := "single_node"
	if *cluster {
		key = "cluster"
	}
	if res != nil {
		res.print(os.Stdout)
		if *out != "" {
			if werr := writeResults(*out, key, res); werr != nil {
				fmt.Fprintf(os.Stderr, "jitchaos: %v\n", werr)
				os.Exit(2)
			}
			fmt.Fprintf(os.Stdout, "\nwrote %s\n", *out)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "jitchaos: %v\n", err)
		os.Exit(2)
	}
	if bad := res.failures(); len(bad) > 0 {
		fmt.Fprintf(os.Stderr, "jitchaos: not 0: %s\n", strings.Join(bad, ", "))
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
	jitd   string
	params params
	quick  bool
	keep   bool
	// cluster runs the round against three jitd nodes (cluster.go).
	cluster bool
	log     io.Writer
}
