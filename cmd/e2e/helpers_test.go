// Package e2e runs the JIT system as a user would: the real binaries, the
// real broker, jitctl's exit codes and JSON output.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

var (
	binDir   string
	buildErr error
	once     sync.Once
)

// bins builds jitd, jitctl, the five services and nats-server once per test run.
func bins(t *testing.T) string {
	t.Helper()
	once.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "jit-e2e-bin")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"github.com/agentjit/jit/cmd/jitctl",
			"github.com/agentjit/jit/cmd/jitd",
			"github.com/agentjit/jit/services/requester/cmd/requester",
			"github.com/agentjit/jit/services/policy/cmd/policy",
			"github.com/agentjit/jit/services/approval/cmd/approval",
			"github.com/agentjit/jit/services/revoker/cmd/revoker",
			"github.com/agentjit/jit/services/auditor/cmd/auditor",
			"github.com/nats-io/nats-server/v2",
		)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func exampleConfig(t *testing.T) string {
	p, err := filepath.Abs("../../examples/jit.yaml")
	require.NoError(t, err)
	return p
}

// result of one jitctl run.
type result struct {
	Code           int
	Stdout, Stderr string
}

// JSON decodes the last JSON line of stdout.
func (r result) JSON(t *testing.T) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &m), "stdout: %s", r.Stdout)
	return m
}

// JSONLines decodes every line of stdout.
func (r result) JSONLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		out = append(out, m)
	}
	return out
}

// deployment is where a running system's keys and credentials are.
type deployment struct {
	keys  string // the keys directory (auth.Store)
	creds string // one credentials file per principal
}

// deployments maps a NATS URL to its deployment, so that every helper acts
// with the credential it needs.
var deployments sync.Map

// register records the deployment behind url.
func register(t testing.TB, url, keys, creds string) {
	t.Helper()
	deployments.Store(url, deployment{keys: keys, creds: creds})
	t.Cleanup(func() { deployments.Delete(url) })
}

func deploymentOf(t testing.TB, url string) deployment {
	t.Helper()
	d, ok := deployments.Load(url)
	require.True(t, ok, "no deployment registered for %s", url)
	return d.(deployment)
}

// connectAs connects to url with the credentials file of principal p from
// its deployment.
func connectAs(t testing.TB, url string, p auth.Principal, opts ...nats.Option) *nats.Conn {
	t.Helper()
	d := deploymentOf(t, url)
	nc, err := nats.Connect(url, append([]nats.Option{nats.UserCredentials(filepath.Join(d.creds, p.CredsFile()))}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// adminConnect connects to url as the break-glass administrator (a
// credential made for the test from the deployment's keys): the tests read
// the stream and buckets as they are.
func adminConnect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, adminOptions(t, url)...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

type cli struct {
	t     *testing.T
	bin   string
	url   string
	token string
}

func (c cli) as(token string) cli { c.token = token; return c }

func (c cli) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "jitctl"), args...)
	cmd.Env = append(os.Environ(), "NATS_URL="+c.url, "JIT_TOKEN="+c.token)
	if d, ok := deployments.Load(c.url); ok {
		cmd.Env = append(cmd.Env, "JIT_CREDS_DIR="+d.(deployment).creds)
	}
	return cmd
}

func (c cli) run(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := c.cmd(ctx, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("jitctl %v: %v", args, err)
	}
	c.t.Logf("jitctl %s → %d\n%s%s", strings.Join(args, " "), code, so.String(), se.String())
	return result{Code: code, Stdout: so.String(), Stderr: se.String()}
}

// background starts jitctl and returns a function that waits for it.
func (c cli) background(args ...string) func() result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	cmd := c.cmd(ctx, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	require.NoError(c.t, cmd.Start())
	var once sync.Once
	var res result
	wait := func() result {
		once.Do(func() {
			defer cancel()
			err := cmd.Wait()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			res = result{Code: code, Stdout: so.String(), Stderr: se.String()}
			c.t.Logf("jitctl %s (background) → %d\n%s%s", strings.Join(args, " "), code, res.Stdout, res.Stderr)
		})
		return res
	}
	c.t.Cleanup(func() { cancel(); wait() })
	return wait
}

// audit reads the events stored on subjects matching filter, in order.
func audit(t *testing.T, url, filter string) []events.Event {
	t.Helper()
	nc := adminConnect(t, url)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A failed read fails the test: a partial list would let an assertion
	// that some event is absent pass.
	msgs, err := natstest.ReadAudit(ctx, js, filter)
	require.NoError(t, err)
	var out []events.Event
	for _, m := range msgs {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

// revocationsOf returns the jit.revoked events of a grant.
func revocationsOf(t *testing.T, url, grantID string) []events.Revocation {
	var out []events.Revocation
	for _, e := range audit(t, url, "jit.revoked.>") {
		r, err := events.DataAs[events.Revocation](e)
		require.NoError(t, err)
		if r.GrantID == grantID {
			out = append(out, r)
		}
	}
	return out
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a child process the test can kill and restart.
type proc struct {
	t    *testing.T
	name string
	path string
	args []string
	env  []string
	cmd  *exec.Cmd
	log  *os.File
}

func startProc(t *testing.T, name, path string, env []string, args ...string) *proc {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	require.NoError(t, err)
	p := &proc{t: t, name: name, path: path, args: args, env: env, log: f}
	p.start()
	t.Cleanup(func() {
		p.kill()
		_ = f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			t.Logf("---- %s log ----\n%s", name, tail(string(b), 6000))
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	require.NoError(p.t, p.cmd.Start())
}

// stop sends SIGTERM and waits for a clean exit, returning its status.
func (p *proc) stop() int {
	p.t.Helper()
	if p.cmd == nil || p.cmd.Process == nil {
		return -1
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.cmd.Wait()
	p.cmd = nil
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

// kill sends SIGKILL: no clean shutdown, no drain.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// waitFor polls cond until it holds (no fixed sleeps: it returns as soon as
// the system is there).
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, timeout, 50*time.Millisecond, what)
}

// external is a deployment of the service binaries on a standalone
// nats-server, with credentials, as deploy/docker-compose.distributed.yml runs it.
type external struct {
	url, dir string
	server   *proc
	services map[string]*proc
}

// deployExternal writes a deployment's keys, credentials and server
// configuration with jitctl creds init, starts nats-server with it and the
// four services each with its own credential (the policy service applies
// cfg), provisions the readers' durables, and registers the deployment.
func deployExternal(t *testing.T, bin, cfg string, extraEnv ...map[string][]string) external {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	initCmd := exec.Command(filepath.Join(bin, "jitctl"), "creds", "init", "--dir", dir, "--config", cfg,
		"--listen", "127.0.0.1:"+strconv.Itoa(port))
	out, err := initCmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	server := startProc(t, "nats-server", filepath.Join(bin, "nats-server"), nil, "-c", filepath.Join(dir, "nats-server.conf"))
	register(t, url, filepath.Join(dir, "keys"), filepath.Join(dir, "creds"))
	svc := map[string]*proc{}
	for _, name := range []string{"policy", "auditor", "revoker", "approval", "requester"} {
		env := []string{"NATS_URL=" + url, "NATS_CREDS=" + filepath.Join(dir, "creds", "service-"+name+".creds"), "LOG_LEVEL=debug"}
		switch name {
		case "policy":
			env = append(env, "JIT_CONFIG="+cfg)
		case "auditor":
			env = append(env, "JIT_AUDIT_KEY="+filepath.Join(dir, "keys", "audit-ed25519.key"))
		}
		for _, m := range extraEnv {
			env = append(env, m[name]...)
		}
		svc[name] = startProc(t, name, filepath.Join(bin, name), env)
	}
	waitFor(t, "provisioned", 30*time.Second, func() bool {
		cmd := exec.Command(filepath.Join(bin, "jitctl"), "creds", "provision", "--keys", filepath.Join(dir, "keys"))
		cmd.Env = append(os.Environ(), "NATS_URL="+url)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("provision: %v\n%s", err, out)
		}
		return err == nil
	})
	return external{url: url, dir: dir, server: server, services: svc}
}

// adminOptions are the connection options of a credential of the
// administrator of the deployment behind url, made for the test.
func adminOptions(t testing.TB, url string) []nats.Option {
	t.Helper()
	store, err := auth.OpenStore(deploymentOf(t, url).keys)
	require.NoError(t, err)
	is, err := store.Ephemeral(auth.Admin)
	require.NoError(t, err)
	opts, err := is.Options()
	require.NoError(t, err)
	return opts
}

// issueAgent makes a credential for an agent the configuration may not know
// (jitctl creds issue, done with the deployment's keys) and returns its id.
func issueAgent(t testing.TB, url, id string) string {
	t.Helper()
	d := deploymentOf(t, url)
	store, err := auth.OpenStore(d.keys)
	require.NoError(t, err)
	p := auth.Principal{Kind: auth.KindAgent, ID: id}
	is, err := store.Issue(p, auth.Scope{})
	require.NoError(t, err)
	require.NoError(t, auth.WriteCreds(filepath.Join(d.creds, p.CredsFile()), is.Creds))
	sys, err := store.SystemCreds()
	require.NoError(t, err)
	nc, err := nats.Connect(url, nats.UserCredentials(sys))
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, auth.PushAccount(t.Context(), nc, is.AccountJWT))
	return id
}

// bufferedLogger is a logger for goroutines that may outlive the (sub)test
// that made them, such as an SDK client's revocation watch: logging to the
// test itself from those races with the testing package. It writes to a
// buffer, shown when the test fails.
func bufferedLogger(t testing.TB) zerolog.Logger {
	b := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- sdk log ----\n%s", b.String())
		}
	})
	return zerolog.New(b).With().Timestamp().Logger()
}
