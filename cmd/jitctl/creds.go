package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// credsCmd runs "creds": credentials of a running system's principals,
// made and revoked with the keys in a data directory (jitd's
// <data-dir>/keys), which only whoever holds them can use.
func (a *app) credsCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand (issue, revoke, list, init, provision)")
	}
	switch args[0] {
	case "issue":
		return a.credsIssue(ctx, args[1:])
	case "revoke":
		return a.credsRevoke(ctx, args[1:])
	case "list":
		return a.credsList(ctx, args[1:])
	case "init":
		return a.credsInit(ctx, args[1:])
	case "provision":
		return a.credsProvision(ctx, args[1:])
	}
	return usagef("unknown subcommand %q (want issue, revoke, list, init or provision)", args[0])
}

// keysFlags registers --data-dir and --keys and returns the keys directory
// they name.
func (a *app) keysFlags(fs interface {
	StringVar(*string, string, string, string)
}) func() string {
	var dataDir, keys string
	fs.StringVar(&dataDir, "data-dir", envOr(a.env, "JIT_DATA_DIR", "./data"), "jitd's data directory: its keys are in <data-dir>/keys, its credentials in <data-dir>/creds (env JIT_DATA_DIR)")
	fs.StringVar(&keys, "keys", "", "the keys directory, if not <data-dir>/keys (jitctl creds init --dir D writes D/keys)")
	return func() string {
		if keys != "" {
			return keys
		}
		return filepath.Join(dataDir, "keys")
	}
}

func envOr(env func(string) string, k, def string) string {
	if v := env(k); v != "" {
		return v
	}
	return def
}

// credsDirOf is the credentials directory next to a keys directory.
func credsDirOf(keys string) string { return filepath.Join(filepath.Dir(keys), "creds") }

func parsePrincipalArgs(pos []string) (auth.Principal, error) {
	if len(pos) != 2 {
		return auth.Principal{}, usagef("want KIND ID (kind: %s, admin, service)", strings.Join(auth.ClientKinds, ", "))
	}
	p := auth.Principal{Kind: pos[0], ID: pos[1]}
	if p.Kind == auth.KindService {
		// A leaked service credential is revoked, and the service given a
		// new one, like any other (jitd's own services get a fresh one at
		// every start and need neither).
		if _, ok := auth.ServicePermissions(p.ID); !ok || p.ID == auth.ServiceJitd {
			return p, usagef("unknown service %q (one of %s)", p.ID, strings.Join(auth.Services[:len(auth.Services)-1], ", "))
		}
		return p, nil
	}
	if err := p.Validate(); err != nil {
		return p, usagef("%v", err)
	}
	return p, nil
}

// credsIssue makes a new credential for a principal of the running system:
// its account reaches the server at once, and a SIEM reader's or an
// operator's audit durable is made.
func (a *app) credsIssue(ctx context.Context, args []string) error {
	fs := a.flags()
	keysDir := a.keysFlags(fs)
	out := fs.String("out", "", "where to write the credentials file (default: <data-dir>/creds/<its name>; the administrator's: <keys>/admin.creds)")
	agents := fs.String("agents", "", "for a guardrail source: the agents it may report on, comma-separated (default: as configured, or every agent)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	p, err := parsePrincipalArgs(pos)
	if err != nil {
		return err
	}
	store, err := auth.OpenStore(keysDir())
	if err != nil {
		return err
	}
	var sc auth.Scope
	if *agents != "" {
		sc.Agents = strings.Split(*agents, ",")
	} else if p.Kind == auth.KindGuardrail {
		sc = a.configuredScope(ctx, store, p)
	}
	is, err := store.Issue(p, sc)
	if err != nil {
		return err
	}
	path := *out
	switch {
	case path != "":
	case p.Kind == auth.KindAdmin:
		path = filepath.Join(store.Dir(), "admin.creds")
	default:
		dir := credsDirOf(store.Dir())
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		path = filepath.Join(dir, p.CredsFile())
	}
	if err := auth.WriteCreds(path, is.Creds); err != nil {
		return err
	}
	if err := a.pushAndProvision(ctx, store, []string{is.AccountJWT}, p); err != nil {
		return fmt.Errorf("%s is written, but the server does not know it yet: %w", path, err)
	}
	if a.json {
		return a.printJSON(struct {
			Principal string `json:"principal"`
			Creds     string `json:"creds"`
			User      string `json:"user"`
			Account   string `json:"account"`
		}{p.String(), path, is.User, is.Account})
	}
	a.printf("issued %s: %s\n", p, path)
	return nil
}

// configuredScope is a guardrail source's agents from the running system's
// configuration, or none (every agent) if it cannot be read.
func (a *app) configuredScope(ctx context.Context, store *auth.Store, p auth.Principal) auth.Scope {
	nc, js, err := a.adminConn(store)
	if err != nil {
		return auth.Scope{}
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, broker.BucketConfig)
	if err != nil {
		return auth.Scope{}
	}
	e, err := kv.Get(ctx, config.ActiveKey)
	if err != nil {
		return auth.Scope{}
	}
	c, err := config.FromJSON(e.Value())
	if err != nil {
		return auth.Scope{}
	}
	if g, ok := c.GuardrailSource(p.ID); ok {
		return auth.Scope{Agents: g.Agents}
	}
	return auth.Scope{}
}

// credsRevoke cuts a principal off: every credential issued for it so far
// stops working, and its live connections are closed.
func (a *app) credsRevoke(ctx context.Context, args []string) error {
	fs := a.flags()
	keysDir := a.keysFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	p, err := parsePrincipalArgs(pos)
	if err != nil {
		return err
	}
	store, err := auth.OpenStore(keysDir())
	if err != nil {
		return err
	}
	r, err := store.Revoke(p)
	if err != nil {
		return err
	}
	if err := a.pushAndProvision(ctx, store, []string{r.AccountJWT}, auth.Principal{}); err != nil {
		return fmt.Errorf("the revocation is recorded but did not reach the server (run jitctl creds provision): %w", err)
	}
	if a.json {
		return a.printJSON(struct {
			Principal string `json:"principal"`
			Revoked   int    `json:"revoked"`
		}{p.String(), r.Users})
	}
	a.printf("revoked %d credential(s) of %s; its connections are closed\n", r.Users, p)
	return nil
}

// credsList prints every principal with an account or a credential.
func (a *app) credsList(_ context.Context, args []string) error {
	fs := a.flags()
	keysDir := a.keysFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	store, err := auth.OpenStore(keysDir())
	if err != nil {
		return err
	}
	list, err := store.Principals()
	if err != nil {
		return err
	}
	if a.json {
		for _, pi := range list {
			if err := a.printJSON(pi); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRINCIPAL\tACTIVE\tREVOKED\tSCOPE")
	for _, pi := range list {
		scope := "-"
		if len(pi.Scope.Agents) > 0 {
			scope = "agents " + strings.Join(pi.Scope.Agents, ",")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", pi.Principal, pi.Active, pi.Revoked, scope)
	}
	return tw.Flush()
}

// credsInit prepares a deployment on an external NATS (the service
// binaries, deploy/docker-compose.distributed.yml): keys, the server's account
// configuration, and a credential for every service, the administrator,
// and every principal of the configuration file.
func (a *app) credsInit(_ context.Context, args []string) error {
	fs := a.flags()
	dir := fs.String("dir", "", "the directory to write: keys/, creds/, jwt/ and nats-server.conf")
	cfgFile := fs.String("config", "", "the configuration file whose agents and guardrail sources get credentials")
	listen := fs.String("listen", "127.0.0.1:4222", "the client address nats-server.conf listens on")
	tlsCert := fs.String("tls-cert", "", "the server's TLS certificate (PEM): nats-server.conf then requires TLS of every client")
	tlsKey := fs.String("tls-key", "", "the server's TLS key (PEM)")
	plaintext := fs.Bool("allow-plaintext", false, "allow a listener beyond loopback without TLS (credentials then cross the network in clear)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if err := required("dir", *dir, "config", *cfgFile); err != nil {
		return err
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if err := auth.CheckListen(*listen, *tlsCert != "", *plaintext); err != nil {
		return usagef("%v", err)
	}
	cfg, err := config.LoadFile(*cfgFile)
	if err != nil {
		return err
	}
	store, err := auth.OpenStore(filepath.Join(*dir, "keys"))
	if err != nil {
		return err
	}
	credsDir := filepath.Join(*dir, "creds")
	want := []auth.Wanted{{Principal: auth.DefaultOperator}, {Principal: auth.DefaultSIEM}, {Principal: auth.DefaultChecker}}
	for _, ag := range cfg.Agents {
		want = append(want, auth.Wanted{Principal: auth.Principal{Kind: auth.KindAgent, ID: ag.ID}})
	}
	for _, g := range cfg.GuardrailSources {
		want = append(want, auth.Wanted{Principal: auth.Principal{Kind: auth.KindGuardrail, ID: g.Name}, Scope: auth.Scope{Agents: g.Agents}})
	}
	if _, err := store.EnsureCreds(credsDir, want); err != nil {
		return err
	}
	for _, name := range []string{auth.ServiceRequester, auth.ServicePolicy, auth.ServiceApproval, auth.ServiceRevoker, auth.ServiceAuditor} {
		p := auth.Service(name)
		path := filepath.Join(credsDir, "service-"+name+".creds")
		if b, err := os.ReadFile(path); err == nil && store.Valid(p, b) {
			continue
		}
		is, err := store.Issue(p, auth.Scope{})
		if err != nil {
			return err
		}
		if err := auth.WriteCreds(path, is.Creds); err != nil {
			return err
		}
	}
	adminPath := filepath.Join(store.Dir(), "admin.creds")
	if b, err := os.ReadFile(adminPath); err != nil || !store.Valid(auth.Admin, b) {
		is, err := store.Issue(auth.Admin, auth.Scope{})
		if err != nil {
			return err
		}
		if err := auth.WriteCreds(adminPath, is.Creds); err != nil {
			return err
		}
	}
	if _, err := store.SystemCreds(); err != nil {
		return err
	}
	jwtDir, _ := filepath.Abs(filepath.Join(*dir, "jwt"))
	storeDir, _ := filepath.Abs(filepath.Join(*dir, "jetstream"))
	accounts, err := store.ServerConfig(jwtDir)
	if err != nil {
		return err
	}
	var tlsBlock string
	if *tlsCert != "" {
		cert, _ := filepath.Abs(*tlsCert)
		key, _ := filepath.Abs(*tlsKey)
		tlsBlock = fmt.Sprintf("tls: { cert_file: %q, key_file: %q }\n", cert, key)
	}
	conf := fmt.Sprintf("# A JIT deployment's NATS server (jitctl creds init). Clustered nodes add\n# server_name and a cluster block; see docs/operations.md.\nlisten: %q\n%sjetstream: { store_dir: %q }\nmax_payload: 1MB\n%s", *listen, tlsBlock, storeDir, accounts)
	confPath := filepath.Join(*dir, "nats-server.conf")
	if err := auth.WriteCreds(confPath, []byte(conf)); err != nil {
		return err
	}
	a.printf("wrote %s (start the server with nats-server -c %s)\n", confPath, confPath)
	a.printf("credentials in %s: services' service-<name>.creds, principals' as jitd names them; the administrator's in %s\n", credsDir, adminPath)
	a.printf("once the server runs: jitctl creds provision --keys %s\n", store.Dir())
	return nil
}

// credsProvision brings a running server up to date with the keys: every
// account (new principals, scopes, revocations), and the audit durables of
// the SIEM readers and operators.
func (a *app) credsProvision(ctx context.Context, args []string) error {
	fs := a.flags()
	keysDir := a.keysFlags(fs)
	maxAge := fs.String("audit-max-age", "", "also set how long the audit stream keeps events, e.g. 90d (services may only create the stream; empty keeps its limits)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	age, err := service.ParseAge(*maxAge)
	if err != nil {
		return usagef("--audit-max-age: %v", err)
	}
	store, err := auth.OpenStore(keysDir())
	if err != nil {
		return err
	}
	accounts, err := store.Accounts()
	if err != nil {
		return err
	}
	var toks []string
	for _, t := range accounts {
		toks = append(toks, t)
	}
	list, err := store.Principals()
	if err != nil {
		return err
	}
	var readers []auth.Principal
	for _, pi := range list {
		if pi.Principal.AuditDurable() != "" {
			readers = append(readers, pi.Principal)
		}
	}
	if err := a.pushAndProvision(ctx, store, toks); err != nil {
		return err
	}
	// The audit durables need the stream: make the topology if no service
	// has yet, and bring it up to this version's (services may only create
	// what is missing).
	nc, js, err := a.adminConn(store)
	if err != nil {
		return err
	}
	defer nc.Close()
	ectx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := broker.Ensure(ectx, js, broker.Options{Update: true, AuditMaxAge: age}); err != nil {
		return err
	}
	if err := a.pushAndProvision(ctx, store, nil, readers...); err != nil {
		return err
	}
	a.printf("%d accounts pushed, the stream and buckets in place, %d audit durables in place\n", len(toks), len(readers))
	return nil
}

// pushAndProvision pushes account JWTs with the system credential and makes
// the audit durables of readers, as the administrator.
func (a *app) pushAndProvision(ctx context.Context, store *auth.Store, accounts []string, readers ...auth.Principal) error {
	var toks []string
	for _, t := range accounts {
		if t != "" {
			toks = append(toks, t)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if len(toks) > 0 {
		sysCreds, err := store.SystemCreds()
		if err != nil {
			return err
		}
		nc, err := a.dial(nats.UserCredentials(sysCreds), nats.Name("jitctl-system"))
		if err != nil {
			return err
		}
		defer nc.Close()
		if err := auth.Push(ctx, nc, toks); err != nil {
			return err
		}
	}
	var durables []string
	for _, p := range readers {
		if d := p.AuditDurable(); d != "" {
			durables = append(durables, d)
		}
	}
	if len(durables) == 0 {
		return nil
	}
	nc, js, err := a.adminConn(store)
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, d := range durables {
		if err := broker.EnsureAuditDurable(ctx, js, d); err != nil {
			return err
		}
	}
	return nil
}

// adminConn connects as the break-glass administrator with a credential
// made for this call.
func (a *app) adminConn(store *auth.Store) (*nats.Conn, jetstream.JetStream, error) {
	is, err := store.Ephemeral(auth.Admin)
	if err != nil {
		return nil, nil, err
	}
	opts, err := is.Options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := a.dial(append(opts, nats.Name("jitctl-admin"))...)
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

// dial connects to NATS_URL with TLS as configured and the options given.
func (a *app) dial(opts ...nats.Option) (*nats.Conn, error) {
	url := a.env("NATS_URL")
	if url == "" {
		url = defaultNATSURL
	}
	tls := a.client
	tls.Creds = ""
	topts, err := tls.NATSOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(append(topts, nats.Timeout(5*time.Second)), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	return nc, nil
}
