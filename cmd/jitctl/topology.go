package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// topologyCmd runs "topology": the stream and buckets as JetStream holds
// them.
func (a *app) topologyCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand (replicas, migrate)")
	}
	switch args[0] {
	case "replicas":
		return a.topologyReplicas(ctx, args[1:])
	case "migrate":
		return a.topologyMigrate(ctx, args[1:]) // migrate.go
	}
	return usagef("unknown subcommand %q (want replicas or migrate)", args[0])
}

// topologyReplicas moves the audit stream and every bucket to N replicas
// (broker.SetReplicas): a single-replica deployment that became a cluster
// goes to three without losing an event or a grant. Only a credential
// that may update streams can: the administrator's, made here from the
// keys of --data-dir or --keys, or a --creds file (keys/admin.creds).
func (a *app) topologyReplicas(ctx context.Context, args []string) error {
	fset := a.flags()
	keysDir := a.keysFlags(fset)
	wait := fset.Duration("wait", 5*time.Minute, "how long to wait for the new replicas to catch up, in all")
	pos, err := parse(fset, args)
	if err != nil {
		return err
	}
	if err := positionals(pos, "N"); err != nil {
		return err
	}
	n, err := strconv.Atoi(pos[0])
	if err != nil || n < 1 || n > 5 {
		return usagef("N: a number of replicas from 1 to 5, not %q", pos[0])
	}
	nc, js, err := a.topologyConn(keysDir())
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	changes, err := broker.SetReplicas(ctx, js, n)
	if a.json {
		if perr := a.printJSON(changes); perr != nil {
			return errors.Join(err, perr)
		}
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tFROM\tTO\tMESSAGES\tLEADER")
	for _, c := range changes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", c.Stream, c.From, c.To, c.Messages, c.Leader)
	}
	if ferr := tw.Flush(); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}

// topologyConn connects with --creds if given, else as the administrator
// with a credential made from the keys in dir, else (no keys: a server
// without authentication) with none.
func (a *app) topologyConn(dir string) (*nats.Conn, jetstream.JetStream, error) {
	if a.client.Creds == "" {
		if _, err := os.Stat(dir); err == nil {
			store, err := auth.OpenStore(dir)
			if err != nil {
				return nil, nil, err
			}
			return a.adminConn(store)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
	}
	var opts []nats.Option
	if a.client.Creds != "" {
		opts = append(opts, nats.UserCredentials(a.client.Creds))
	}
	nc, err := a.dial(append(opts, nats.Name("jitctl-topology"))...)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
