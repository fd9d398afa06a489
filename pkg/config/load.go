package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a configuration file.
const MaxFileSize = 4 << 20

var permPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*:[a-z0-9_.-]+$`)

// ValidPermission reports whether p has the form "area:action" in lower
// case, e.g. "data:write".
func ValidPermission(p string) bool { return permPattern.MatchString(p) }

// LoadFile reads, parses and validates the YAML configuration at path.
// Errors name the file and the line.
func LoadFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, b)
}

// Parse parses and validates YAML. name is used in error messages (a file
// name). Every problem found is reported, joined, each prefixed with
// "name:line:". Unknown fields are errors.
func Parse(name string, b []byte) (*Config, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrInvalid, name, MaxFileSize)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(name, b, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err == nil {
		lines := seqLines(&root, "rules")
		for i := range c.Rules {
			if i < len(lines) {
				c.Rules[i].line = lines[i]
			}
		}
		c.setLines(&root)
	}
	if err := c.validate(name); err != nil {
		return nil, err
	}
	return &c, nil
}

// lines of items of top-level sequence key, for error messages.
func seqLines(root *yaml.Node, key string) []int {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	m := root.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, it := range m.Content[i+1].Content {
				out = append(out, it.Line)
			}
			return out
		}
	}
	return nil
}

type lineIndex struct{ agents, approvers, guardrails []int }

func (c *Config) setLines(root *yaml.Node) {
	c.lines = lineIndex{
		agents:     seqLines(root, "agents"),
		approvers:  seqLines(root, "approvers"),
		guardrails: seqLines(root, "guardrails"),
	}
}

func at(lines []int, i int) int {
	if i < len(lines) {
		return lines[i]
	}
	return 0
}

// FromJSON decodes a configuration stored by Store and validates it.
func FromJSON(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: stored configuration: %v", ErrInvalid, err)
	}
	if err := c.validate("stored configuration"); err != nil {
		return nil, err
	}
	return &c, nil
}

// JSON returns the canonical JSON form of the configuration, as stored.
func (c *Config) JSON() []byte {
	b, _ := json.Marshal(c)
	return b
}

func (c *Config) validate(name string) error {
	type problem struct {
		line int
		err  error
	}
	var problems []problem
	bad := func(line int, what, format string, args ...any) {
		loc := name
		if line > 0 {
			loc += ":" + strconv.Itoa(line)
		}
		msg := fmt.Sprintf(format, args...)
		if what != "" {
			msg = what + ": " + msg
		}
		problems = append(problems, problem{line, fmt.Errorf("%s: %s", loc, msg)})
	}

	c.loc = time.UTC
	if c.Timezone != "" {
		loc, err := time.LoadLocation(c.Timezone)
		if err != nil {
			bad(0, "", "timezone %q: %v", c.Timezone, err)
		} else {
			c.loc = loc
		}
	}
	if c.ApprovalWindow == 0 {
		c.ApprovalWindow = Duration(DefaultApprovalWindow)
	}
	if c.ApprovalWindow < Duration(time.Second) || c.ApprovalWindow > Duration(MaxGrantDuration) {
		bad(0, "", "approval_window %s must be between 1s and 24h", c.ApprovalWindow.D())
	}
	c.Risk.defaults()
	if c.Risk.BusinessHours != "" {
		if _, _, err := ParseHours(c.Risk.BusinessHours); err != nil {
			bad(0, "risk", "business_hours: %v", err)
		}
	}

	c.agents = make(map[string]*Agent, len(c.Agents))
	for i := range c.Agents {
		a := &c.Agents[i]
		line := at(c.lines.agents, i)
		what := fmt.Sprintf("agent %q", a.ID)
		if !events.ValidID(a.ID) {
			bad(line, what, "id must be 1-64 letters, digits, '-' or '_'")
		}
		if _, dup := c.agents[a.ID]; dup {
			bad(line, what, "defined twice")
		}
		c.agents[a.ID] = a
		for _, p := range append(slices.Clone(a.Base), a.Eligible...) {
			if !ValidPermission(p) {
				bad(line, what, "permission %q is not of the form area:action", p)
			}
		}
		if a.MaxJitDuration <= 0 {
			bad(line, what, "max_jit_duration must be set")
		} else if a.MaxJitDuration.D() > MaxGrantDuration {
			bad(line, what, "max_jit_duration %s is above the limit of %s", a.MaxJitDuration.D(), MaxGrantDuration)
		}
	}

	c.approvers = make(map[string]*Approver, len(c.Approvers))
	held := map[string]bool{}
	for i := range c.Approvers {
		ap := &c.Approvers[i]
		line := at(c.lines.approvers, i)
		what := fmt.Sprintf("approver %q", ap.Name)
		if !events.ValidID(ap.Name) {
			bad(line, what, "name must be 1-64 letters, digits, '-' or '_'")
		}
		if _, dup := c.approvers[ap.Name]; dup {
			bad(line, what, "defined twice")
		}
		c.approvers[ap.Name] = ap
		if _, isAgent := c.agents[ap.Name]; isAgent {
			bad(line, what, "an agent's identity can never approve")
		}
		if len(ap.Roles) == 0 {
			bad(line, what, "needs at least one role")
		}
		for _, r := range ap.Roles {
			if !slices.Contains(KnownRoles, r) {
				bad(line, what, "unknown role %q (known: %s)", r, strings.Join(KnownRoles, ", "))
			}
			held[r] = true
		}
		if c.Redacted && ap.TokenSHA256 == "" {
			// The token hash is only in the whole configuration.
		} else if h, err := hexSHA256(ap.TokenSHA256); err != nil {
			bad(line, what, "token_sha256: %v", err)
		} else {
			ap.TokenSHA256 = h
		}
	}

	seenG := map[string]bool{}
	for i, g := range c.Guardrails {
		if strings.TrimSpace(g.Name) == "" || seenG[g.Name] {
			bad(at(c.lines.guardrails, i), fmt.Sprintf("guardrail %q", g.Name), "name must be set and unique")
		}
		seenG[g.Name] = true
	}
	seenS := map[string]bool{}
	for _, src := range c.GuardrailSources {
		what := fmt.Sprintf("guardrail source %q", src.Name)
		if !events.ValidID(src.Name) {
			bad(0, what, "name must be 1-64 letters, digits, '-' or '_'")
		}
		if seenS[src.Name] {
			bad(0, what, "defined twice")
		}
		seenS[src.Name] = true
		if len(src.Guardrails) == 0 {
			bad(0, what, "names no guardrails it may fire")
		}
		for _, g := range src.Guardrails {
			if !seenG[g] {
				bad(0, what, "guardrail %q is not defined under guardrails", g)
			}
		}
		for _, a := range src.Agents {
			if _, ok := c.agents[a]; !ok {
				bad(0, what, "agent %q is not defined under agents", a)
			}
		}
	}

	seenR := map[string]bool{}
	for i := range c.Rules {
		r := &c.Rules[i]
		what := fmt.Sprintf("rule %q", r.Name)
		if strings.TrimSpace(r.Name) == "" {
			what = fmt.Sprintf("rule #%d", i+1)
			bad(r.line, what, "name must be set")
		} else if seenR[r.Name] {
			bad(r.line, what, "defined twice")
		}
		seenR[r.Name] = true
		switch r.Mode {
		case ModeAutoApprove, ModePolicy, ModeRequireApproval, ModeDeny:
		default:
			bad(r.line, what, "mode %q must be one of auto-approve, policy, require-approval, deny", r.Mode)
		}
		if len(r.Permissions) == 0 {
			bad(r.line, what, "permissions must name at least one permission or pattern")
		}
		for _, p := range r.Permissions {
			if p != "*" && !ValidPermission(strings.TrimSuffix(p, "*")+strings.Repeat("x", boolInt(strings.HasSuffix(p, "*")))) {
				bad(r.line, what, "permission pattern %q is not area:action, area:* or *", p)
			}
		}
		for _, a := range r.Agents {
			if a == "*" {
				continue
			}
			ag, ok := c.agents[a]
			if !ok {
				bad(r.line, what, "unknown agent %q", a)
				continue
			}
			if r.MaxDuration > ag.MaxJitDuration {
				bad(r.line, what, "max_duration %s is above agent %q's max_jit_duration %s", r.MaxDuration.D(), a, ag.MaxJitDuration.D())
			}
		}
		if r.MaxDuration > 0 && (len(r.Agents) == 0 || slices.Contains(r.Agents, "*")) && len(r.AgentLabels) == 0 {
			// A rule for every agent: a cap above every agent's maximum caps
			// nothing, which is a mistake worth naming.
			var longest Duration
			for _, ag := range c.Agents {
				longest = max(longest, ag.MaxJitDuration)
			}
			if len(c.Agents) > 0 && r.MaxDuration > longest {
				bad(r.line, what, "max_duration %s is above every agent's max_jit_duration (the longest is %s)", r.MaxDuration.D(), longest.D())
			}
		}
		if r.MaxDuration < 0 {
			bad(r.line, what, "max_duration must not be negative")
		}
		if r.Mode == ModePolicy {
			if r.Policy == nil {
				bad(r.line, what, "mode policy needs a policy block")
			} else {
				if r.Policy.Hours != "" {
					if _, _, err := ParseHours(r.Policy.Hours); err != nil {
						bad(r.line, what, "policy.hours: %v", err)
					}
				}
				for _, d := range r.Policy.Weekdays {
					if _, ok := weekdays[strings.ToLower(d)]; !ok {
						bad(r.line, what, "policy.weekdays: %q is not mon…sun", d)
					}
				}
				if r.Policy.MaxRisk < 0 || r.Policy.MaxRisk > 100 {
					bad(r.line, what, "policy.max_risk must be 0-100")
				}
			}
		} else if r.Policy != nil {
			bad(r.line, what, "a policy block needs mode policy")
		}
		if r.Mode == ModeRequireApproval {
			if len(r.ApproverRoles) == 0 {
				bad(r.line, what, "require-approval needs approver_roles")
			}
			for _, role := range r.ApproverRoles {
				if !slices.Contains(KnownRoles, role) {
					bad(r.line, what, "unknown approver role %q", role)
				} else if !held[role] {
					bad(r.line, what, "approver role %q is held by no approver", role)
				}
			}
		} else if len(r.ApproverRoles) > 0 {
			bad(r.line, what, "approver_roles needs mode require-approval")
		}
	}
	c.validatePolicyExt(bad)
	c.validateApprovalExt(bad)
	if len(problems) > 0 {
		// In file order, so a reader can fix them top to bottom; problems
		// without a line (top-level settings) come first.
		slices.SortStableFunc(problems, func(a, b problem) int { return a.line - b.line })
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = p.err
		}
		return fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// badFunc records one validation problem at a line, about what.
type badFunc func(line int, what, format string, args ...any)

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func hexSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 64 {
		return "", fmt.Errorf("must be 64 hex characters (the SHA-256 of the token)")
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return "", fmt.Errorf("must be hex")
		}
	}
	return s, nil
}

func (r *Risk) defaults() {
	if r.Duration == 0 {
		r.Duration = 20
	}
	if r.OffHours == 0 {
		r.OffHours = 20
	}
	if r.Breadth == 0 {
		r.Breadth = 10
	}
	if r.BusinessHours == "" {
		r.BusinessHours = "08:00-18:00"
	}
	if r.Sensitivity == nil {
		r.Sensitivity = map[string]int{}
	}
	if _, ok := r.Sensitivity["default"]; !ok {
		r.Sensitivity["default"] = 20
	}
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseHours parses "HH:MM-HH:MM" into minutes after midnight. The end may
// be 24:00; an end before the start spans midnight.
func ParseHours(s string) (from, to int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	if from, err = minutes(a); err != nil {
		return 0, 0, err
	}
	if to, err = minutes(b); err != nil {
		return 0, 0, err
	}
	return from, to, nil
}

func minutes(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not a time HH:MM", s)
	}
	return hh*60 + mm, nil
}

// InHours reports whether t (already in the right zone) falls in the window
// "HH:MM-HH:MM". An invalid window never matches.
func InHours(window string, t time.Time) bool {
	from, to, err := ParseHours(window)
	if err != nil {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	if from <= to {
		return m >= from && m < to
	}
	return m >= from || m < to
}

// OnWeekday reports whether t falls on one of days (mon … sun); an empty
// list allows every day.
func OnWeekday(days []string, t time.Time) bool {
	if len(days) == 0 {
		return true
	}
	for _, d := range days {
		if wd, ok := weekdays[strings.ToLower(d)]; ok && wd == t.Weekday() {
			return true
		}
	}
	return false
}
