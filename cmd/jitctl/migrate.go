package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// topologyMigrate moves a stopped standalone jitd's audit stream and
// buckets into the cluster at NATS_URL (broker.Migrate): it opens the
// standalone's store with a server of its own, which only it may do while
// no jitd runs on it (the store's lock), snapshots every stream, restores
// each into the cluster, then moves them to --replicas. The cluster's
// nodes run with a copy of the standalone's keys (the same accounts) and
// without services (jitd --broker-only), so the stream and buckets do not
// exist there yet. A refusal (exit 1) changes nothing: the standalone
// still runs, the cluster already has data, or it is no cluster.
func (a *app) topologyMigrate(ctx context.Context, args []string) error {
	fset := a.flags()
	dataDir := fset.String("data-dir", envOr(a.env, "JIT_DATA_DIR", "./data"), "the standalone jitd's data directory, its store in <data-dir>/jetstream (env JIT_DATA_DIR); that jitd must be stopped")
	keys := fset.String("keys", "", "the keys directory, if not <data-dir>/keys (the standalone's --keys-dir); the cluster's nodes run with a copy of it")
	replicas := fset.Int("replicas", 3, "replicas of every stream once moved (1 onto a single server)")
	wait := fset.Duration("wait", 10*time.Minute, "how long the copy and the new replicas may take, in all")
	pos, err := parse(fset, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if *replicas < 1 || *replicas > 5 {
		return usagef("--replicas: a number of replicas from 1 to 5, not %d", *replicas)
	}
	keysDir := *keys
	if keysDir == "" {
		keysDir = filepath.Join(*dataDir, "keys")
	}
	storeDir := filepath.Join(*dataDir, "jetstream")
	if _, err := os.Stat(filepath.Join(storeDir, "jetstream")); err != nil {
		return fmt.Errorf("no JetStream store in %s: %w", *dataDir, err)
	}
	lock, err := embedded.LockStore(storeDir)
	if errors.Is(err, embedded.ErrStoreInUse) {
		return a.refuse(fmt.Errorf("%w: stop the standalone jitd first", err))
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	var store *auth.Store
	if _, err := os.Stat(keysDir); err == nil {
		if store, err = auth.OpenStore(keysDir); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	to, toJS, err := a.topologyConn(keysDir)
	if err != nil {
		return err
	}
	defer to.Close()
	if *replicas > 1 && to.ConnectedClusterName() == "" {
		return a.refuse(fmt.Errorf("the server at %s is not part of a cluster: give --replicas 1 to move onto a single server", to.ConnectedUrlRedacted()))
	}
	if err := waitJetStream(ctx, toJS); err != nil {
		return fmt.Errorf("JetStream at %s: %w", to.ConnectedUrlRedacted(), err)
	}
	// Refused here, the standalone's store is not even opened.
	if _, err := broker.CheckMigrationTarget(ctx, toJS); err != nil {
		if errors.Is(err, broker.ErrTargetHasData) {
			return a.refuse(err)
		}
		return err
	}

	from, closeSource, err := openStandalone(storeDir, store)
	if err != nil {
		return err
	}
	defer closeSource()
	m, err := broker.Migrate(ctx, from, to, broker.MigrateOptions{Replicas: *replicas, Dir: *dataDir})
	if errors.Is(err, broker.ErrTargetHasData) {
		return a.refuse(err)
	}
	if a.json {
		if perr := a.printJSON(m); perr != nil {
			return errors.Join(err, perr)
		}
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tFIRST\tLAST\tDURABLES\tREPLICAS\tLEADER")
	for _, s := range m.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Stream, s.Messages, s.FirstSeq, s.LastSeq, len(s.Durables), s.Replicas, s.Leader)
	}
	if ferr := tw.Flush(); ferr != nil {
		return errors.Join(err, ferr)
	}
	if len(m.Absent) > 0 {
		a.printf("not in the standalone (jitd creates them at its start): %s\n", strings.Join(m.Absent, ", "))
	}
	if len(m.Left) > 0 {
		a.printf("left in the standalone (not the JIT system's): %s\n", strings.Join(m.Left, ", "))
	}
	return err
}

// waitJetStream waits, for at most 30 s, until JetStream answers at js: a
// cluster whose nodes just started elects its meta leader first.
func waitJetStream(ctx context.Context, js jetstream.JetStream) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// refuse prints why the command refused, and that nothing changed, and
// ends it with exit 1.
func (a *app) refuse(err error) error {
	if a.json {
		_ = a.printJSON(map[string]string{"outcome": "refused", "error": err.Error()})
	} else {
		fmt.Fprintf(a.stderr, "jitctl %s: refused, nothing changed: %v\n", a.cmd.name, err)
	}
	return errRefused
}

// openStandalone starts a server on a standalone jitd's store, as that
// jitd would (the accounts of store, if any, with a resolver directory of
// its own, so that the data directory's is not touched), and connects to
// it in process as the administrator. closeSource closes the connection,
// stops the server and removes the resolver directory.
func openStandalone(storeDir string, store *auth.Store) (_ *nats.Conn, closeSource func(), _ error) {
	eo := embedded.Options{Listen: "127.0.0.1:-1", StoreDir: storeDir, ServerName: "jitctl-migrate"}
	var resolver string
	if store != nil {
		var err error
		if resolver, err = os.MkdirTemp("", "jitctl-migrate-jwt-"); err != nil {
			return nil, nil, err
		}
		eo.Configure = func(o *server.Options) error { return store.ConfigureServer(o, resolver) }
	}
	removeResolver := func() {
		if resolver != "" {
			_ = os.RemoveAll(resolver)
		}
	}
	s, err := embedded.Start(eo)
	if err != nil {
		removeResolver()
		return nil, nil, fmt.Errorf("open the standalone's store: %w", err)
	}
	stop := func() {
		embedded.Stop(s)
		removeResolver()
	}
	opts := []nats.Option{nats.InProcessServer(s), nats.Name("jitctl-migrate")}
	if store != nil {
		is, err := store.Ephemeral(auth.Admin)
		if err != nil {
			stop()
			return nil, nil, err
		}
		copts, err := is.Options()
		if err != nil {
			stop()
			return nil, nil, err
		}
		opts = append(opts, copts...)
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("connect to the standalone's store: %w", err)
	}
	return nc, func() {
		nc.Close()
		stop()
	}, nil
}
