package policy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"go.yaml.in/yaml/v3"
)

// TestFile is a table of expected decisions (jitctl policy test FILE), so
// that a policy change is tested in CI like any other code. See
// examples/policy-tests.yaml.
type TestFile struct {
	// Config is the configuration under test, relative to the test file.
	Config string `yaml:"config"`
	// At is the default decision time (RFC 3339).
	At    string     `yaml:"at"`
	Cases []TestCase `yaml:"cases"`
}

// TestCase is one request and the decision expected for it.
type TestCase struct {
	Name        string            `yaml:"name"`
	Agent       string            `yaml:"agent"`
	Permissions []string          `yaml:"permissions"`
	Duration    string            `yaml:"duration"`
	Reason      string            `yaml:"reason"`
	Context     map[string]string `yaml:"context"`
	// At overrides the file's decision time.
	At        string `yaml:"at"`
	Suspended bool   `yaml:"suspended"`
	// History is the agent's recent history before the request.
	History Counts `yaml:"history"`
	Expect  Expect `yaml:"expect"`
}

// Expect is what a case expects; empty fields are not checked.
type Expect struct {
	Outcome        string `yaml:"outcome"`
	Mode           string `yaml:"mode"`
	Rule           string `yaml:"rule"`
	ReasonContains string `yaml:"reason_contains"`
	// Risk, if set, is the exact risk score expected.
	Risk *int `yaml:"risk"`
}

// CaseResult is the outcome of one case: the decision, and what differed
// from the expectation (nothing when it passed).
type CaseResult struct {
	Name     string          `json:"name"`
	Decision events.Decision `json:"decision"`
	Failures []string        `json:"failures,omitempty"`
}

// Passed reports whether the case met its expectation.
func (r CaseResult) Passed() bool { return len(r.Failures) == 0 }

// LoadTestFile reads a test table. Unknown fields are errors, and every
// case needs a name, an agent and an expected outcome.
func LoadTestFile(path string) (*TestFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy tests: %w", err)
	}
	var tf TestFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if tf.Config != "" && !filepath.IsAbs(tf.Config) {
		tf.Config = filepath.Join(filepath.Dir(path), tf.Config)
	}
	if len(tf.Cases) == 0 {
		return nil, fmt.Errorf("%s: no cases", path)
	}
	for i, c := range tf.Cases {
		if c.Name == "" || c.Agent == "" || c.Expect.Outcome == "" {
			return nil, fmt.Errorf("%s: case #%d %q needs name, agent and expect.outcome", path, i+1, c.Name)
		}
		if _, err := c.input(tf.At); err != nil {
			return nil, fmt.Errorf("%s: case %q: %w", path, c.Name, err)
		}
	}
	return &tf, nil
}

// input builds the case's request; defaultAt is the file's time.
func (c TestCase) input(defaultAt string) (Input, error) {
	at := c.At
	if at == "" {
		at = defaultAt
	}
	now := time.Date(2025, 3, 5, 10, 0, 0, 0, time.UTC) // a Wednesday morning
	if at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return Input{}, fmt.Errorf("at: %w", err)
		}
		now = t
	}
	d := time.Duration(0)
	if c.Duration != "" {
		var err error
		if d, err = time.ParseDuration(c.Duration); err != nil {
			return Input{}, fmt.Errorf("duration: %w", err)
		}
	}
	reason := c.Reason
	if reason == "" {
		reason = "policy test " + c.Name
	}
	req := events.Request{
		RequestID: "test", Agent: c.Agent, Permissions: c.Permissions, DurationMS: d.Milliseconds(),
		Reason: reason, Context: c.Context, RequestedBy: events.Actor{Kind: events.ActorAgent, ID: c.Agent}, RequestedAt: now,
	}
	return Input{Request: req, Now: now, Suspended: c.Suspended, History: c.History}, nil
}

// Run decides every case under cfg with Evaluate, the service's own code.
func (tf *TestFile) Run(cfg *config.Config) []CaseResult {
	out := make([]CaseResult, 0, len(tf.Cases))
	for _, c := range tf.Cases {
		in, _ := c.input(tf.At) // checked by LoadTestFile
		d := Evaluate(cfg, in)
		r := CaseResult{Name: c.Name, Decision: d}
		check := func(what, got, want string) {
			if want != "" && got != want {
				r.Failures = append(r.Failures, fmt.Sprintf("%s is %q, want %q", what, got, want))
			}
		}
		check("outcome", d.Outcome, c.Expect.Outcome)
		check("mode", d.Mode, c.Expect.Mode)
		check("rule", d.Rule, c.Expect.Rule)
		if w := c.Expect.ReasonContains; w != "" && !strings.Contains(d.Reason, w) {
			r.Failures = append(r.Failures, fmt.Sprintf("reason %q does not contain %q", d.Reason, w))
		}
		if w := c.Expect.Risk; w != nil && d.Risk != nil && d.Risk.Score != *w {
			r.Failures = append(r.Failures, fmt.Sprintf("risk is %d, want %d", d.Risk.Score, *w))
		}
		out = append(out, r)
	}
	return out
}
