package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADME runs the README's walkthrough as written: every `$ ` command
// of every sh block between "## Walkthrough" and the next section, in order,
// through bash, against a fresh jitd started as `make run` starts it, and
// compares what each prints (stdout and stderr, as a terminal shows them)
// with the lines the README shows under it. So the two cannot drift apart.
//
// The README's conventions, which this test defines:
//   - `…` within a line stands for any text (ids, times); a line that is
//     only `…` stands for any number of lines;
//   - `req_…` and `grt_…` in a command stand for the latest request and
//     grant id printed so far;
//   - a command whose output shows "waiting for approval" blocks, as it
//     does for a user: it runs on while the next block (the approver's
//     other terminal) runs, and the rest of its output is compared when
//     that block is done;
//   - a command that only reads (check, grants, pending, audit, config
//     show) is run again until its output matches or 10 s pass (40 s for
//     audit verify, which needs the auditor's next checkpoint): the system
//     is eventually consistent, as it is for a user who types a little later.
func TestREADME(t *testing.T) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	steps, err := walkthrough(string(readme))
	require.NoError(t, err)
	require.NotEmpty(t, steps)

	// The working directory looks like the repository's root after
	// `make build`: bin/, examples/, and data/ once jitd has started.
	work := t.TempDir()
	require.NoError(t, os.Symlink(bins(t), filepath.Join(work, "bin")))
	require.NoError(t, os.Symlink(filepath.Join(root, "examples"), filepath.Join(work, "examples")))
	natsPort, httpPort := freePort(t), freePort(t)
	jitd := startProc(t, "jitd", filepath.Join(work, "bin", "jitd"), nil,
		"--config", filepath.Join(work, "examples", "jit.yaml"), "--data-dir", filepath.Join(work, "data"),
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort), "--http-listen", fmt.Sprintf("127.0.0.1:%d", httpPort))
	waitFor(t, "jitd running", 20*time.Second, func() bool {
		b, _ := os.ReadFile(jitd.log.Name())
		return bytes.Contains(b, []byte(`"jitd running"`))
	})

	sh := &shell{t: t, dir: work, env: readmeEnv(natsPort), ids: map[string]string{}}
	var bg *blocked
	for i, s := range steps {
		if bg != nil && s.block > bg.until {
			bg.finish(t)
			bg = nil
		}
		if s.export {
			sh.export(s.cmd)
			continue
		}
		cmd := sh.substitute(s.cmd)
		if w := waitingLine(s.want); w >= 0 {
			require.Nil(t, bg, "step %d: two blocking commands at once", i)
			bg = sh.start(s, cmd, w)
			continue
		}
		sh.run(s, cmd)
	}
	if bg != nil {
		bg.finish(t)
	}
}

// step is one command of the walkthrough and the output shown under it.
type step struct {
	block  int // which sh block, in order
	line   int // the command's line in README.md
	cmd    string
	want   []string
	export bool
}

// walkthrough reads the commands of the README's walkthrough section.
func walkthrough(readme string) ([]step, error) {
	var steps []step
	in, inBlock, block := false, false, 0
	sc := bufio.NewScanner(strings.NewReader(readme))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Walkthrough"
			continue
		case !in:
			continue
		case !inBlock && line == "```sh":
			inBlock = true
			block++
			continue
		case inBlock && line == "```":
			inBlock = false
			continue
		case !inBlock:
			continue
		}
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			steps = append(steps, step{block: block, line: n, cmd: cmd, export: strings.HasPrefix(cmd, "export ")})
			continue
		}
		if len(steps) == 0 || steps[len(steps)-1].block != block {
			return nil, fmt.Errorf("README.md:%d: output before any command in its block", n)
		}
		last := &steps[len(steps)-1]
		if strings.HasSuffix(last.cmd, "\\") && len(last.want) == 0 {
			last.cmd += "\n" + line // a continued command line
			continue
		}
		last.want = append(last.want, strings.TrimRight(line, " "))
	}
	return steps, sc.Err()
}

// readmeEnv is the environment of a fresh terminal, pointed at the test's
// jitd: nothing of the caller's JIT or NATS settings leaks in.
func readmeEnv(natsPort int) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "JIT_") || strings.HasPrefix(k, "NATS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, fmt.Sprintf("NATS_URL=nats://127.0.0.1:%d", natsPort))
}

// shell runs the walkthrough's commands with bash in one working directory
// and environment, as a terminal would.
type shell struct {
	t   *testing.T
	dir string
	env []string
	ids map[string]string // "req" and "grt": the latest id printed
}

var idPattern = regexp.MustCompile(`\b(req|grt)_[a-z2-7]{26}\b`)

// substitute puts the latest ids printed in place of req_… and grt_….
func (sh *shell) substitute(cmd string) string {
	for _, kind := range []string{"req", "grt"} {
		if strings.Contains(cmd, kind+"_…") {
			require.NotEmpty(sh.t, sh.ids[kind], "%q: no %s id printed before", cmd, kind)
			cmd = strings.ReplaceAll(cmd, kind+"_…", sh.ids[kind])
		}
	}
	return cmd
}

func (sh *shell) remember(out string) {
	for _, m := range idPattern.FindAllStringSubmatch(out, -1) {
		sh.ids[m[1]] = m[0]
	}
}

func (sh *shell) command(ctx context.Context, cmd string) *exec.Cmd {
	c := exec.CommandContext(ctx, "bash", "-c", cmd)
	c.Dir, c.Env = sh.dir, sh.env
	c.WaitDelay = 5 * time.Second
	return c
}

// export runs an export line and keeps the environment it leaves.
func (sh *shell) export(cmd string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := sh.command(ctx, cmd+" && env -0").Output()
	require.NoError(sh.t, err, cmd)
	sh.env = strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// readOnly commands may be run again until the system has caught up.
var readOnly = regexp.MustCompile(`^(JIT_TOKEN=\S+ )?jitctl (check|grants|pending|audit|config show)\b`)

func (sh *shell) run(s step, cmd string) {
	t := sh.t
	t.Helper()
	patience := 10 * time.Second
	if strings.Contains(cmd, "audit verify") {
		// The auditor signs a checkpoint every 30 s (auditor.DefaultInterval).
		patience = 40 * time.Second
	}
	deadline := time.Now().Add(patience)
	for {
		out := sh.output(cmd)
		if matchLines(s.want, lines(out)) {
			sh.remember(out)
			return
		}
		if !readOnly.MatchString(cmd) || time.Now().After(deadline) {
			sh.remember(out)
			t.Errorf("README.md:%d: $ %s\nthe README shows:\n%s\njitctl printed:\n%s", s.line, cmd,
				strings.Join(s.want, "\n"), out)
			return
		}
		time.Sleep(100 * time.Millisecond) // polling the system's state, not synchronising
	}
}

func (sh *shell) output(cmd string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := sh.command(ctx, cmd)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out // one stream, in order, as a terminal shows it
	err := c.Run()
	if _, exit := err.(*exec.ExitError); err != nil && !exit {
		sh.t.Fatalf("$ %s: %v", cmd, err)
	}
	return out.String()
}

// blocked is a command left running while the walkthrough goes on.
type blocked struct {
	s     step
	cmd   string
	until int // the block after which it must have finished
	out   *syncBuffer
	done  chan error
	sh    *shell
}

// start runs a blocking command and returns once it has printed the
// README's lines up to and including the waiting line w.
func (sh *shell) start(s step, cmd string, w int) *blocked {
	t := sh.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	c := sh.command(ctx, cmd)
	b := &blocked{s: s, cmd: cmd, until: s.block + 1, out: &syncBuffer{}, done: make(chan error, 1), sh: sh}
	c.Stdout, c.Stderr = b.out, b.out
	require.NoError(t, c.Start())
	go func() { b.done <- c.Wait() }()
	head := append(append([]string(nil), s.want[:w+1]...), "…")
	waitFor(t, fmt.Sprintf("README.md:%d: %q", s.line, s.want[w]), 20*time.Second, func() bool {
		return matchLines(head, lines(b.out.String()))
	})
	sh.remember(b.out.String())
	return b
}

// finish waits for the blocked command and compares all it printed.
func (b *blocked) finish(t *testing.T) {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("README.md:%d: $ %s did not finish; it printed:\n%s", b.s.line, b.cmd, b.out.String())
	}
	out := b.out.String()
	assert.True(t, matchLines(b.s.want, lines(out)), "README.md:%d: $ %s\nthe README shows:\n%s\njitctl printed:\n%s",
		b.s.line, b.cmd, strings.Join(b.s.want, "\n"), out)
	b.sh.remember(out)
}

func waitingLine(want []string) int {
	for i, l := range want {
		if strings.Contains(l, "waiting for approval") {
			return i
		}
	}
	return -1
}

func lines(out string) []string {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return nil
	}
	ls := strings.Split(out, "\n")
	for i := range ls {
		ls[i] = strings.TrimRight(ls[i], " ")
	}
	return ls
}

// matchLines reports whether got matches want, where a want line of only
// "…" matches any number of lines and "…" within a line any text.
func matchLines(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "…" {
		for i := 0; i <= len(got); i++ {
			if matchLines(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && linePattern(want[0]).MatchString(got[0]) && matchLines(want[1:], got[1:])
}

var patterns sync.Map

var minutesLeft = regexp.MustCompile(`\b([1-9][0-9]*)m left`)

func linePattern(w string) *regexp.Regexp {
	if re, ok := patterns.Load(w); ok {
		return re.(*regexp.Regexp)
	}
	parts := strings.Split(w, "…")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
		// "30m left" is a grant's whole duration; the command runs a
		// moment after the grant, and on a slow machine it says
		// "29m48s left".
		parts[i] = minutesLeft.ReplaceAllStringFunc(parts[i], func(m string) string {
			n, _ := strconv.Atoi(minutesLeft.FindStringSubmatch(m)[1])
			return fmt.Sprintf("(?:%dm|%dm[0-9]{1,2}s) left", n, n-1)
		})
	}
	re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
	patterns.Store(w, re)
	return re
}

// syncBuffer is a bytes.Buffer a running command writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMatchLines: the README's wildcards match what they say and no more.
func TestMatchLines(t *testing.T) {
	for i, c := range []struct {
		want, got []string
		ok        bool
	}{
		{nil, nil, true},
		{nil, []string{"x"}, false},
		{[]string{"a…c"}, []string{"abbc"}, true},
		{[]string{"a…c"}, []string{"abbcd"}, false},
		{[]string{"…"}, nil, true},
		{[]string{"…"}, []string{"1", "2"}, true},
		{[]string{"a", "…", "z"}, []string{"a", "b", "c", "z"}, true},
		{[]string{"a", "…", "z"}, []string{"a", "b"}, false},
		{[]string{"x.y"}, []string{"xzy"}, false},
		{[]string{"g (30m left)"}, []string{"g (30m left)"}, true},
		{[]string{"g (30m left)"}, []string{"g (29m48s left)"}, true},
		{[]string{"g (30m left)"}, []string{"g (28m48s left)"}, false},
		{[]string{"g (30m left)"}, []string{"g (30m12s left)"}, false},
	} {
		require.Equal(t, c.ok, matchLines(c.want, c.got), strconv.Itoa(i))
	}
}
