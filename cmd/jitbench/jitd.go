package main

import (
	"bufio"
	"bytes"
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
	"time"
)

// jitd is a jitd subprocess on a data directory, with its stderr (JSON log
// lines) copied to a file and scanned for the lines the benchmark waits for.
type jitd struct {
	bin, dataDir, config string
	natsAddr, httpAddr   string
	pprof                bool
	memLimit             string // --memory-limit, if set
	noAuth               bool   // --insecure-no-auth

	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}

	mu    sync.Mutex
	seen  map[string]time.Time // log message → first time seen
	waits map[string][]chan time.Time
	lines map[string]map[string]any // log message → its first line, decoded
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func newJitd(bin, dataDir, config string, pprof bool, memLimit string) (*jitd, error) {
	nats, err := freeAddr()
	if err != nil {
		return nil, err
	}
	http, err := freeAddr()
	if err != nil {
		return nil, err
	}
	j := &jitd{bin: bin, dataDir: dataDir, config: config, natsAddr: nats, httpAddr: http, pprof: pprof, memLimit: memLimit}
	j.reset()
	return j, nil
}

// reset forgets the log lines seen so far.
func (j *jitd) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seen = map[string]time.Time{}
	j.waits = map[string][]chan time.Time{}
	j.lines = map[string]map[string]any{}
}

// seenAt is when msg was first logged (zero if not yet).
func (j *jitd) seenAt(msg string) time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seen[msg]
}

// start runs jitd and returns once it logged "jitd running".
// Call reset before a restart, so that waits see the new process's lines.
func (j *jitd) start(timeout time.Duration) error {
	args := []string{"--data-dir", j.dataDir, "--nats-listen", j.natsAddr, "--http-listen", j.httpAddr, "--log-level", "info"}
	if j.config != "" {
		args = append(args, "--config", j.config)
	}
	if j.pprof {
		args = append(args, "--pprof")
	}
	if j.memLimit != "" {
		args = append(args, "--memory-limit", j.memLimit)
	}
	if j.noAuth {
		args = append(args, "--insecure-no-auth")
	}
	cmd := exec.Command(j.bin, args...)
	logf, err := os.OpenFile(filepath.Join(j.dataDir, "jitd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return err
	}
	running := j.wait("jitd running")
	j.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", j.bin, err)
	}
	j.cmd = cmd
	j.exited = make(chan struct{})
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
		close(j.exited)
	}()
	select {
	case <-running:
		return nil
	case <-j.exited:
		return fmt.Errorf("jitd exited at start; see %s", filepath.Join(j.dataDir, "jitd.log"))
	case <-time.After(timeout):
		_ = j.kill()
		return fmt.Errorf("jitd did not start within %s", timeout)
	}
}

// observe records the first time a log message appears, for the messages
// the benchmark waits on.
func (j *jitd) observe(line []byte, at time.Time) {
	i := bytes.Index(line, []byte(`"message":"`))
	if i < 0 {
		return
	}
	rest := line[i+len(`"message":"`):]
	k := bytes.IndexByte(rest, '"')
	if k < 0 {
		return
	}
	msg := string(rest[:k])
	switch msg {
	case "jitd running", "restored the leases", "revoker running":
	default:
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

// wait returns a channel that receives the time msg is first logged.
func (j *jitd) wait(msg string) <-chan time.Time {
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

func (j *jitd) line(msg string) map[string]any {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lines[msg]
}

func (j *jitd) natsURL() string { return "nats://" + j.natsAddr }

// stop sends SIGTERM and waits for the process to exit.
func (j *jitd) stop(timeout time.Duration) (time.Duration, error) {
	if j.cmd == nil || j.cmd.Process == nil {
		return 0, nil
	}
	t0 := time.Now()
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.exited:
		return time.Since(t0), nil
	case <-time.After(timeout):
		return time.Since(t0), j.kill()
	}
}

func (j *jitd) kill() error {
	if j.cmd == nil || j.cmd.Process == nil {
		return nil
	}
	err := j.cmd.Process.Kill()
	<-j.exited
	return err
}

// rssMB is the resident memory of the jitd process (VmRSS) in MiB.
func (j *jitd) rssMB() (float64, error) {
	return procStatusMB(j.cmd.Process.Pid, "VmRSS:")
}

func procStatusMB(pid int, field string) (float64, error) {
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
