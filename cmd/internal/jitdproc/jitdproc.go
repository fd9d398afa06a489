// Package jitdproc runs jitd as a subprocess for the measuring commands
// (jitbench, jitchaos): a fresh data directory, free loopback ports, its
// stderr (JSON log lines) copied to <data-dir>/jitd.log and scanned for the
// lines a measurement waits for.
package jitdproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Messages a Jitd records the first time they are logged (see SeenAt, Wait
// and Line), besides any added with Watch.
const (
	MsgRunning  = "jitd running"
	MsgRestored = "restored the leases"
	MsgRevoker  = "revoker running"
)

// Jitd is a jitd subprocess on a data directory. The addresses are chosen
// once, so a restart (Reset, then Start) listens where clients reconnect.
type Jitd struct {
	Bin, DataDir string
	// Config is passed as --config when set; clear it before a restart to
	// keep the stored configuration.
	Config             string
	NATSAddr, HTTPAddr string
	PProf              bool
	MemLimit           string // --memory-limit, if set
	NoAuth             bool   // --insecure-no-auth
	// Wrap, if set, runs jitd under this command (its arguments follow):
	// for example "ip netns exec jcn1", to run a node in a network
	// namespace of its own. The command must exec jitd in its own process,
	// so that signals reach jitd.
	Wrap []string
	// Args are further flags, after the others (a cluster node's
	// --server-name, --cluster-listen, --routes, --replicas, --keys-dir,
	// --auditor; --sync-always).
	Args []string

	Cmd     *exec.Cmd
	Started time.Time
	exited  chan struct{}

	mu     sync.Mutex
	watch  map[string]bool
	seen   map[string]time.Time // log message → first time seen
	waits  map[string][]chan time.Time
	lines  map[string]map[string]any // log message → its first line, decoded
	counts map[string]int            // "level: message" → lines, warn and above
}

// ClusterArgs are the cluster flags of one jitd node: its name, its route
// address, every node's route address, the keys directory every node
// shares, --replicas 3, and whether it runs the auditor (one node does).
// jitbench and jitchaos start their clusters with them, and a test checks
// that deploy/docker-compose.yml gives its nodes the same. They give no
// route TLS (--cluster-tls-*): every run, and the compose file, keeps its
// routes on one machine, and the measurements stay comparable with the
// earlier ones; a cluster across machines adds it.
func ClusterArgs(name, listen string, routes []string, keysDir string, auditor bool) []string {
	return []string{"--server-name", name, "--cluster-listen", listen, "--routes", strings.Join(routes, ","),
		"--replicas", "3", "--keys-dir", keysDir, "--auditor=" + strconv.FormatBool(auditor)}
}

// NewCluster returns the three jitd nodes of a cluster on free loopback
// ports: node i's data directory is <dir>/n<i+1>, every node uses node 1's
// keys directory, and their flags are ClusterArgs' (the auditor on node 1).
// It starts nothing; StartAll does.
func NewCluster(bin, dir, config, memLimit string, noAuth bool) ([]*Jitd, error) {
	routes := make([]string, 3)
	for i := range routes {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		routes[i] = a
	}
	return newCluster(bin, dir, config, memLimit, noAuth, routes)
}

// NewClusterOn is NewCluster with node i on hosts[i] (its client port 4222,
// its route port 6222) run under wraps[i] (see Jitd.Wrap): nodes in
// network namespaces of their own. The addresses are beyond loopback, so
// the nodes are started with --allow-plaintext.
func NewClusterOn(bin, dir, config, memLimit string, noAuth bool, hosts []string, wraps [][]string) ([]*Jitd, error) {
	routes := make([]string, len(hosts))
	for i, h := range hosts {
		routes[i] = net.JoinHostPort(h, "6222")
	}
	nodes, err := newCluster(bin, dir, config, memLimit, noAuth, routes)
	if err != nil {
		return nil, err
	}
	for i, n := range nodes {
		n.NATSAddr = net.JoinHostPort(hosts[i], "4222")
		n.HTTPAddr = "127.0.0.1:8080" // the namespace's own loopback
		n.Wrap = wraps[i]
		n.Args = append(n.Args, "--allow-plaintext")
	}
	return nodes, nil
}

func newCluster(bin, dir, config, memLimit string, noAuth bool, routes []string) ([]*Jitd, error) {
	keys := filepath.Join(dir, "n1", "keys")
	var nodes []*Jitd
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		nd := filepath.Join(dir, name)
		if err := os.MkdirAll(nd, 0o700); err != nil {
			return nil, err
		}
		j, err := New(bin, nd, config, false, memLimit)
		if err != nil {
			return nil, err
		}
		j.NoAuth = noAuth
		j.Args = ClusterArgs(name, routes[i], routes, keys, i == 0)
		nodes = append(nodes, j)
	}
	return nodes, nil
}

// StartAll starts the nodes at once (each waits for a JetStream quorum
// before it logs "jitd running") and returns when all have, or with every
// error.
func StartAll(nodes []*Jitd, timeout time.Duration) error {
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.Start(timeout) }()
	}
	var all []error
	for range nodes {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// New returns a Jitd of bin on dataDir with configuration file config, on
// free loopback ports. It starts nothing.
func New(bin, dataDir, config string, pprof bool, memLimit string) (*Jitd, error) {
	nats, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	http, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	j := &Jitd{Bin: bin, DataDir: dataDir, Config: config, NATSAddr: nats, HTTPAddr: http, PProf: pprof, MemLimit: memLimit,
		watch: map[string]bool{MsgRunning: true, MsgRestored: true, MsgRevoker: true}}
	j.Reset()
	return j, nil
}

// Watch adds log messages whose first appearance SeenAt, Wait and Line
// report.
func (j *Jitd) Watch(msgs ...string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, m := range msgs {
		j.watch[m] = true
	}
}

// Reset forgets the log lines seen so far (the counts of Warnings are kept).
func (j *Jitd) Reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seen = map[string]time.Time{}
	j.waits = map[string][]chan time.Time{}
	j.lines = map[string]map[string]any{}
	if j.counts == nil {
		j.counts = map[string]int{}
	}
}

// SeenAt is when msg was first logged (zero if not yet).
func (j *Jitd) SeenAt(msg string) time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seen[msg]
}

// Start runs jitd and returns once it logged "jitd running".
// Call Reset before a restart, so that waits see the new process's lines.
func (j *Jitd) Start(timeout time.Duration) error {
	args := []string{"--data-dir", j.DataDir, "--nats-listen", j.NATSAddr, "--http-listen", j.HTTPAddr, "--log-level", "info"}
	if j.Config != "" {
		args = append(args, "--config", j.Config)
	}
	if j.PProf {
		args = append(args, "--pprof")
	}
	if j.MemLimit != "" {
		args = append(args, "--memory-limit", j.MemLimit)
	}
	if j.NoAuth {
		args = append(args, "--insecure-no-auth")
	}
	args = append(args, j.Args...)
	cmd := exec.Command(j.Bin, args...)
	if len(j.Wrap) > 0 {
		cmd = exec.Command(j.Wrap[0], append(append(j.Wrap[1:len(j.Wrap):len(j.Wrap)], j.Bin), args...)...)
	}
	logf, err := os.OpenFile(filepath.Join(j.DataDir, "jitd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return err
	}
	running := j.Wait(MsgRunning)
	j.Started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", j.Bin, err)
	}
	j.Cmd = cmd
	exited := make(chan struct{})
	j.exited = exited
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			now := time.Now()
			line := sc.Bytes()
			_, _ = logf.Write(append(line, '\n'))
			j.observe(line, now)
		}
	}()
	go func() {
		<-scanned
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-running:
		return nil
	case <-exited:
		return fmt.Errorf("jitd exited at start; see %s", filepath.Join(j.DataDir, "jitd.log"))
	case <-time.After(timeout):
		_ = j.Kill()
		return fmt.Errorf("jitd did not start within %s", timeout)
	}
}

// Exited is closed when the process last started has exited.
func (j *Jitd) Exited() <-chan struct{} { return j.exited }

// field returns the value of the JSON string field name in line, found
// without decoding the line.
func field(line []byte, name string) (string, bool) {
	k := `"` + name + `":"`
	i := bytes.Index(line, []byte(k))
	if i < 0 {
		return "", false
	}
	rest := line[i+len(k):]
	e := bytes.IndexByte(rest, '"')
	if e < 0 {
		return "", false
	}
	return string(rest[:e]), true
}

// observe records the first time a watched log message appears, and counts
// the lines logged at warn level and above.
func (j *Jitd) observe(line []byte, at time.Time) {
	msg, ok := field(line, "message")
	if !ok {
		return
	}
	level, _ := field(line, "level")
	switch level {
	case "warn", "error", "fatal", "panic":
		j.mu.Lock()
		j.counts[level+": "+msg]++
		j.mu.Unlock()
	}
	j.mu.Lock()
	watched := j.watch[msg]
	_, dup := j.seen[msg]
	j.mu.Unlock()
	if !watched || dup {
		return
	}
	var fields map[string]any
	_ = json.Unmarshal(line, &fields)
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.seen[msg]; ok {
		return
	}
	j.seen[msg] = at
	j.lines[msg] = fields
	for _, c := range j.waits[msg] {
		c <- at
	}
	delete(j.waits, msg)
}

// Warnings returns how many lines each "level: message" of warn level and
// above was logged, over every start of this Jitd.
func (j *Jitd) Warnings() map[string]int {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]int, len(j.counts))
	for k, v := range j.counts {
		out[k] = v
	}
	return out
}

// Wait returns a channel that receives the time msg is first logged.
func (j *Jitd) Wait(msg string) <-chan time.Time {
	c := make(chan time.Time, 1)
	j.mu.Lock()
	defer j.mu.Unlock()
	if t, ok := j.seen[msg]; ok {
		c <- t
		return c
	}
	j.waits[msg] = append(j.waits[msg], c)
	return c
}

// Line is the first line that logged msg, decoded (nil if not yet).
func (j *Jitd) Line(msg string) map[string]any {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lines[msg]
}

// Name is the server's name: its --server-name, or jitd's default "jitd".
func (j *Jitd) Name() string {
	for i, a := range j.Args {
		if a == "--server-name" && i+1 < len(j.Args) {
			return j.Args[i+1]
		}
	}
	return "jitd"
}

// NATSURL is the URL clients connect to.
func (j *Jitd) NATSURL() string { return "nats://" + j.NATSAddr }

// Stop sends SIGTERM and waits for the process to exit.
func (j *Jitd) Stop(timeout time.Duration) (time.Duration, error) {
	if j.Cmd == nil || j.Cmd.Process == nil {
		return 0, nil
	}
	t0 := time.Now()
	_ = j.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
		return time.Since(t0), nil
	case <-time.After(timeout):
		return time.Since(t0), j.Kill()
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (j *Jitd) Kill() error {
	if j.Cmd == nil || j.Cmd.Process == nil {
		return nil
	}
	err := j.Cmd.Process.Kill()
	<-j.exited
	return err
}

// Signal sends sig to the process (SIGSTOP, SIGCONT) and does not wait.
func (j *Jitd) Signal(sig os.Signal) error {
	if j.Cmd == nil || j.Cmd.Process == nil {
		return fmt.Errorf("jitd is not running")
	}
	return j.Cmd.Process.Signal(sig)
}

// RSSMB is the resident memory of the jitd process (VmRSS) in MiB.
func (j *Jitd) RSSMB() (float64, error) {
	return ProcStatusMB(j.Cmd.Process.Pid, "VmRSS:")
}

// ProcStatusMB reads a memory field of /proc/<pid>/status in MiB.
func ProcStatusMB(pid int, field string) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// ProcCPU is the CPU time (user and system) process pid has used so far,
// from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// utime and stime are fields 14 and 15 of stat; f[0] is field 3.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}
