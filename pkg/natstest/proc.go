package natstest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/stretchr/testify/require"
)

// BuildFailpoint builds the main package pkg (an import path, such as
// github.com/agentjit/jit/services/approval/cmd/approval) with the build
// tag failpoint into the test's temporary directory and returns the
// binary's path. The Go build cache makes every build after the first
// quick.
func BuildFailpoint(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), path.Base(pkg))
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gobin, "build", "-tags", "failpoint", "-o", bin, pkg).CombinedOutput()
	require.NoError(t, err, "go build -tags failpoint %s:\n%s", pkg, out)
	return bin
}

// Proc is a service binary running as a child of the test, so that it can
// die for real: by SIGKILL, at a failpoint (package failpoint).
type Proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
	out  *LockedBuffer
}

// StartProc runs bin with env (KEY=value) added to the test's own
// environment; a failpoint is armed with failpoint.Env. Its output is
// shown if the test fails. A process still running at the end of the test
// is killed.
func StartProc(t testing.TB, bin string, env ...string) *Proc {
	t.Helper()
	out := &LockedBuffer{}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	p := &Proc{t: t, cmd: cmd, done: make(chan struct{}), out: out}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s %v:\n%s", filepath.Base(bin), env, out.String())
		}
	})
	return p
}

// WaitKilled waits up to timeout for the process to die by SIGKILL, as it
// does at an armed failpoint, and fails the test if it did not die, or died
// in another way: the failpoint was never reached.
func (p *Proc) WaitKilled(timeout time.Duration) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s is still running after %s: the failpoint was not reached", p.cmd.Path, timeout)
	}
	var ee *exec.ExitError
	require.True(p.t, errors.As(p.err, &ee), "%s ended with %v, not by a signal", p.cmd.Path, p.err)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(p.t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "%s ended with %v, not by SIGKILL", p.cmd.Path, p.err)
}

// Output is what the process has written so far, stdout and stderr.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed once the process has exited, however it ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM, waits for the process to exit and requires exit
// status 0.
func (p *Proc) Stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not stop within 30s of SIGTERM", p.cmd.Path)
	}
	require.NoError(p.t, p.err, "%s's exit", p.cmd.Path)
}

// Failpoint is the environment entry that arms points.
func Failpoint(points ...string) string {
	v := failpoint.Env + "="
	for i, p := range points {
		if i > 0 {
			v += ","
		}
		v += p
	}
	return v
}

// LockedBuffer is a bytes.Buffer that many goroutines (a process's output,
// loggers) may write at once.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
