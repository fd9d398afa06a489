package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Exit codes.
const (
	exitOK      = 0 // granted, allowed, done
	exitRefused = 1 // denied, not allowed
	exitError   = 2 // bad flags, API error, no connection
)

// callTimeout bounds every request-reply API call.
const callTimeout = 10 * time.Second

const defaultNATSURL = "nats://127.0.0.1:4222"

// errRefused ends a command with exit 1 after it printed the refusal.
var errRefused = errors.New("refused")

// usageError is a bad command line: exit 2 with the command's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

type command struct {
	name, args, help string
	run              func(a *app, ctx context.Context, args []string) error
}

// commands lists every command, in the order usage shows them.
var commands = []command{
	{"request", "--agent A --perm P [--perm P…] --duration D --reason R [--context K=V…] [--timeout D] [--request-id ID]",
		"ask for a time-bounded grant and wait for the outcome", (*app).request},
	{"check", "--agent A --perm P", "is the agent allowed the permission now?", (*app).check},
	{"grants", "[--agent A]", "list active grants", (*app).grants},
	{"done", "GRANT_ID", "end a grant now: the agent's task is complete", (*app).done},
	{"pending", "", "list requests waiting for an approver (JIT_TOKEN)", (*app).pending},
	{"approve", "REQUEST_ID [--comment C] [--perm P…] [--duration D]", "approve a pending request, or less of it (JIT_TOKEN)", (*app).approve},
	{"deny", "REQUEST_ID --comment C", "deny a pending request (JIT_TOKEN)", (*app).deny},
	{"guardrail", "fire --agent A --rule R [--detail D]", "report a guardrail violation: suspends the agent", (*app).guardrail},
	{"reinstate", "--agent A [--comment C]", "lift an agent's suspension (JIT_TOKEN)", (*app).reinstate},
	{"audit", "[--since DURATION|TIME] [--agent A] [--format text|json|ocsf] [--follow [--durable NAME]] | export [--since …] | verify --key FILE [--key FILE…] [--since …] [--file EXPORT]",
		"print the audit trail up to now; export it exactly; verify it against the signed checkpoints (exit 1: tampered)", (*app).audit},
	{"config", "apply FILE | show", "apply a configuration file (JIT_TOKEN of an org-admin or security-admin), or print the active one", (*app).configCmd},
	{"policy", "explain --agent A --perm P --duration D --reason R [--context K=V…] [--at TIME] [--config FILE] | test FILE [--config FILE]",
		"dry-run a decision and say why, or check a table of expected decisions", (*app).policyCmd},
	{"status", "[--wait D] [--max-backlog N] [--max-age D]", "show every service instance, consumer backlogs, failing revocations, the configuration's revision and suspended agents (exit 0 healthy, 1 degraded, 2 unreachable)", (*app).status},
	{"hash-token", "TOKEN", "print the SHA-256 of a token for the configuration's token_sha256", (*app).hashToken},
	{"creds", "issue KIND ID [--out FILE] [--agents A,B] | revoke KIND ID | list | init --dir D --config FILE | provision [--audit-max-age D] [--data-dir D | --keys DIR]",
		"make or revoke a principal's NATS credential with the keys of a data directory (kinds: agent, guardrail, checker, siem, operator, admin, service)", (*app).credsCmd},
	{"topology", "replicas N [--data-dir D | --keys DIR] [--wait D] | migrate --data-dir D [--keys DIR] [--replicas N] [--wait D]",
		"move the audit stream and every bucket to N replicas, waiting for each to catch up; or move a stopped standalone jitd's (D) into the new cluster at NATS_URL, started with its keys and --broker-only (exit 1: refused, nothing changed) (the administrator's credential: from the keys, or --creds)", (*app).topologyCmd},
	{"help", "", "show this help", nil},
}

// app is one invocation's environment.
type app struct {
	stdout, stderr io.Writer
	env            func(string) string
	json           bool
	cmd            *command
	// client is how to connect: --creds (NATS_CREDS) and TLS, as the nats
	// CLI names them; credsDir (--creds-dir, JIT_CREDS_DIR) holds one
	// credentials file per principal, from which a command picks the one
	// it acts as when --creds is not given.
	client   auth.ClientOptions
	credsDir string
}

// run is the whole program: it runs the command in args and returns the
// exit status. Tests call it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, env func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, env: env}
	// --json may also come before the command.
	for len(args) > 0 && (args[0] == "--json" || args[0] == "-json") {
		a.json = true
		args = args[1:]
	}
	if len(args) == 0 {
		a.usage(stderr)
		return exitError
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		a.usage(stdout)
		return exitOK
	}
	for i := range commands {
		if commands[i].name == name && commands[i].run != nil {
			a.cmd = &commands[i]
			return a.exit(commands[i].run(a, ctx, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "jitctl: unknown command %q\n\n", name)
	a.usage(stderr)
	return exitError
}

func (a *app) exit(err error) int {
	var ue *usageError
	var ae *broker.APIError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errRefused):
		return exitRefused
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		if ue.msg == "" {
			return exitError
		}
		fmt.Fprintf(a.stderr, "jitctl %s: %s\nusage: jitctl %s %s\n", a.cmd.name, ue.msg, a.cmd.name, a.cmd.args)
	case errors.As(err, &ae):
		fmt.Fprintf(a.stderr, "jitctl %s: %s (%d %s)\n", a.cmd.name, ae.Message, ae.Status, ae.Code)
	default:
		fmt.Fprintf(a.stderr, "jitctl %s: %v\n", a.cmd.name, err)
	}
	return exitError
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintln(w, "jitctl: just-in-time permissions for AI agents")
	fmt.Fprintln(w, "\nusage: jitctl COMMAND [flags] [--json]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.help)
		if c.args != "" {
			fmt.Fprintf(w, "  %-10s   jitctl %s %s\n", "", c.name, c.args)
		}
	}
	fmt.Fprintln(w, "\nenvironment:")
	fmt.Fprintf(w, "  NATS_URL   the NATS server (default %s)\n", defaultNATSURL)
	fmt.Fprintln(w, "  NATS_CREDS the credentials file of the principal to act as (--creds)")
	fmt.Fprintln(w, "  JIT_CREDS_DIR  a directory of credentials files (jitd's <data-dir>/creds): each command")
	fmt.Fprintln(w, "             picks the principal it acts as (--creds-dir)")
	fmt.Fprintln(w, "  JIT_TOKEN  the approver's token, for pending, approve, deny, reinstate and config apply")
	fmt.Fprintln(w, "\n--json prints one JSON object per line.")
	fmt.Fprintln(w, "exit status: 0 granted/allowed/success, 1 denied/not allowed, 2 error.")
}

// flags returns the command's flag set, with --json registered.
func (a *app) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("jitctl "+a.cmd.name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.BoolVar(&a.json, "json", a.json, "print one JSON object per line")
	a.client.Flags(fs, a.env)
	fs.StringVar(&a.credsDir, "creds-dir", a.env("JIT_CREDS_DIR"), "directory of credentials files (jitd's <data-dir>/creds): without --creds, the command acts as the principal it needs (env JIT_CREDS_DIR)")
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "usage: jitctl %s %s\n\n%s\n\nflags:\n", a.cmd.name, a.cmd.args, a.cmd.help)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after the positional
// arguments, and returns the positionals. Everything after "--" is
// positional. A flag error has already been printed by the flag package.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{} // the flag package printed it with the usage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// positionals checks the number of positional arguments.
func positionals(pos []string, names ...string) error {
	switch {
	case len(pos) < len(names):
		return usagef("missing %s", names[len(pos)])
	case len(pos) > len(names):
		return usagef("unexpected argument %q", pos[len(names)])
	}
	for i, p := range pos {
		if strings.TrimSpace(p) == "" {
			return usagef("%s must not be empty", names[i])
		}
	}
	return nil
}

// required reports the first of the named string flags left empty.
func required(kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if strings.TrimSpace(kv[i+1]) == "" {
			return usagef("--%s is required", kv[i])
		}
	}
	return nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// connect dials NATS_URL as the principal the command acts as (see
// connectAs), the default operator.
func (a *app) connect() (*nats.Conn, jetstream.JetStream, error) {
	return a.connectAs(auth.DefaultOperator)
}

// principal is who a command acting as want connects as: the --creds
// file's principal, or want when it picks want's file from --creds-dir; ok
// is false without a credential.
func (a *app) principal(want auth.Principal) (auth.Principal, bool, error) {
	if a.client.Creds != "" {
		return a.client.Principal()
	}
	if a.credsDir != "" {
		return want, true, nil
	}
	return auth.Principal{}, false, nil
}

// connectAs dials NATS_URL with the credential of principal want: the
// --creds file if given (whoever it names: the server holds it to its
// rights), else want's file in --creds-dir, else none (a server without
// authentication). A failed first connection is an error at once; later
// disconnects are retried without limit. The JetStream context of a client
// principal uses its account's API prefix.
func (a *app) connectAs(want auth.Principal) (*nats.Conn, jetstream.JetStream, error) {
	url := a.env("NATS_URL")
	if url == "" {
		url = defaultNATSURL
	}
	client := a.client
	if client.Creds == "" && a.credsDir != "" {
		path := filepath.Join(a.credsDir, want.CredsFile())
		if _, err := os.Stat(path); err != nil {
			return nil, nil, fmt.Errorf("no credential for %s in %s (%s): %w", want, a.credsDir, want.CredsFile(), err)
		}
		client.Creds = path
	}
	opts, err := client.NATSOptions()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name("jitctl"),
		nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	p, withCreds, _ := client.Principal()
	js, err := auth.JetStream(nc, p, withCreds)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// token returns the approver token from JIT_TOKEN.
func (a *app) token() (string, error) {
	t := a.env("JIT_TOKEN")
	if t == "" {
		return "", errors.New("JIT_TOKEN is not set: this command needs an approver's token")
	}
	return t, nil
}

// approverConn returns the approver's token and a connection, for the
// commands that act as an approver. The caller closes the connection.
func (a *app) approverConn() (string, *nats.Conn, error) {
	token, err := a.token()
	if err != nil {
		return "", nil, err
	}
	nc, _, err := a.connect()
	if err != nil {
		return "", nil, err
	}
	return token, nc, nil
}

// call makes one API call under callTimeout.
func (a *app) call(ctx context.Context, nc *nats.Conn, subject, token string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return broker.Call(ctx, nc, subject, token, in, out)
}

// printJSON writes v as one line of JSON.
func (a *app) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = a.stdout.Write(b)
	return err
}

func (a *app) printf(format string, args ...any) { fmt.Fprintf(a.stdout, format, args...) }

// timeText formats t for people: UTC, to the second.
func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// leftText says how long until t, to the second.
func leftText(t time.Time, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return events.FormatDuration(d) + " left"
}
