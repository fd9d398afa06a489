// Package config is the JIT system's configuration: service accounts
// (agents), decision rules, approvers, guardrails and risk weights. It loads
// and validates YAML, and stores the active configuration in a KV bucket so
// that every service and replica applies the same version.
package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	// Zone data is compiled in, so the configured timezone loads in minimal
	// containers without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/agentjit/jit/pkg/events"
)

// Roles an approver can hold.
const (
	RoleOrgAdmin      = "org-admin"
	RoleSecurityAdmin = "security-admin"
	RoleOperator      = "operator"
)

// KnownRoles lists every approver role.
var KnownRoles = []string{RoleOrgAdmin, RoleSecurityAdmin, RoleOperator}

// ReinstateRoles may lift a suspension.
var ReinstateRoles = []string{RoleOrgAdmin, RoleSecurityAdmin}

// Rule modes.
const (
	ModeAutoApprove     = "auto-approve"
	ModePolicy          = "policy"
	ModeRequireApproval = "require-approval"
	ModeDeny            = "deny"
)

// DefaultApprovalWindow is how long a request waits for a human when the
// configuration does not say.
const DefaultApprovalWindow = 15 * time.Minute

// MaxGrantDuration bounds any agent's maxJitDuration.
const MaxGrantDuration = events.MaxGrantDuration

// Config is a validated configuration. Treat it as immutable once loaded:
// services share one *Config between goroutines.
type Config struct {
	// Timezone names the IANA zone in which policy hours are read.
	Timezone string `yaml:"timezone" json:"timezone"`
	// ApprovalWindow is how long a request may wait for a human.
	ApprovalWindow Duration    `yaml:"approval_window" json:"approval_window"`
	Agents         []Agent     `yaml:"agents" json:"agents"`
	Rules          []Rule      `yaml:"rules" json:"rules"`
	Approvers      []Approver  `yaml:"approvers" json:"approvers"`
	Guardrails     []Guardrail `yaml:"guardrails" json:"guardrails"`
	Risk           Risk        `yaml:"risk" json:"risk"`
	// Holidays (YYYY-MM-DD, in Timezone) are offered to rule conditions.
	Holidays []string `yaml:"holidays" json:"holidays,omitempty"`
	// RateLimit bounds each agent's requests (policy denies the excess).
	RateLimit RateLimit `yaml:"rate_limit" json:"rate_limit"`
	// Notifiers receive requests that wait for a human.
	Notifiers []Notifier `yaml:"notifiers" json:"notifiers,omitempty"`
	// Console configures the approver console's public address.
	Console Console `yaml:"console" json:"console"`
	// GuardrailSources are the systems that may report guardrail
	// violations, each with its own NATS credential.
	GuardrailSources []GuardrailSource `yaml:"guardrail_sources" json:"guardrail_sources,omitempty"`

	// Redacted is set on the copy stored for every service and checker
	// (Public): approvers' token hashes and notifiers' URLs and secrets are
	// blank, and only the approval service reads the whole configuration.
	Redacted bool `yaml:"-" json:"redacted,omitempty"`
	// FullDigest, on a redacted copy, is the digest of the whole
	// configuration, so that every copy of one version has one digest.
	FullDigest string `yaml:"-" json:"digest,omitempty"`

	loc       *time.Location
	lines     lineIndex
	agents    map[string]*Agent
	approvers map[string]*Approver
	pol       policyExt // compiled conditions and the rule index (policy_ext.go)
}

// Agent is a service account: a non-human identity with base permissions
// and the permissions it may ask for just in time.
type Agent struct {
	ID    string `yaml:"id" json:"id"`
	Owner string `yaml:"owner" json:"owner,omitempty"`
	// Base permissions are standing; everything else must be granted.
	Base []string `yaml:"base" json:"base"`
	// Eligible permissions may be requested; anything else is refused at the
	// edge.
	Eligible []string `yaml:"eligible" json:"eligible"`
	// MaxJitDuration caps every grant of this agent.
	MaxJitDuration Duration          `yaml:"max_jit_duration" json:"max_jit_duration"`
	Labels         map[string]string `yaml:"labels" json:"labels,omitempty"`
}

// Rule decides requests for some agents and permissions.
type Rule struct {
	Name string `yaml:"name" json:"name"`
	// Agents the rule applies to; "*" or empty means every agent.
	Agents []string `yaml:"agents" json:"agents,omitempty"`
	// AgentLabels, if set, restricts the rule to agents carrying every one
	// of these labels with these values.
	AgentLabels map[string]string `yaml:"agent_labels" json:"agent_labels,omitempty"`
	// Permissions the rule applies to; "area:*" matches every permission of
	// an area, "*" every permission.
	Permissions []string `yaml:"permissions" json:"permissions"`
	Mode        string   `yaml:"mode" json:"mode"`
	// MaxDuration, if set, caps a grant under this rule below the agent's
	// maxJitDuration.
	MaxDuration Duration `yaml:"max_duration" json:"max_duration,omitempty"`
	// Policy holds the conditions of a policy-mode rule.
	Policy *Policy `yaml:"policy" json:"policy,omitempty"`
	// ApproverRoles, for require-approval, are the roles of which an
	// approver must hold one.
	ApproverRoles []string `yaml:"approver_roles" json:"approver_roles,omitempty"`
	// Condition is an optional CEL expression that must be true for the rule
	// to apply (see docs/configuration.md for the variables it sees).
	Condition string `yaml:"condition" json:"condition,omitempty"`
	// Approvals, for require-approval, is how many distinct approvers must
	// approve (default 1). One deny ends the request.
	Approvals int `yaml:"approvals" json:"approvals,omitempty"`
	// ApprovalWindow, for require-approval, overrides the top-level window.
	ApprovalWindow Duration `yaml:"approval_window" json:"approval_window,omitempty"`
	// SeparateOwner forbids the agent's owner from approving its requests.
	SeparateOwner bool `yaml:"separate_owner" json:"separate_owner,omitempty"`
	// Notify names the notifiers told of a request waiting under this rule.
	Notify []string `yaml:"notify" json:"notify,omitempty"`

	line int
}

// RateLimit is a per-agent request budget: at most Requests per Per.
type RateLimit struct {
	Requests int      `yaml:"requests" json:"requests,omitempty"`
	Per      Duration `yaml:"per" json:"per,omitempty"`
}

// Notifier delivers pending requests to humans.
type Notifier struct {
	Name string `yaml:"name" json:"name"`
	// Type is "webhook" (signed JSON) or "slack" (incoming-webhook blocks).
	Type string `yaml:"type" json:"type"`
	URL  string `yaml:"url" json:"url"`
	// Secret signs webhook bodies (HMAC-SHA256).
	Secret string `yaml:"secret" json:"secret,omitempty"`
}

// Console configures the approver console.
type Console struct {
	// URL is the console's public base address, used in notification links.
	URL string `yaml:"url" json:"url,omitempty"`
}

// Policy is the condition of a policy-mode rule: every set condition must
// hold for the rule to approve; otherwise it denies, saying which failed.
type Policy struct {
	// Hours is a window "HH:MM-HH:MM" in the configured time zone.
	Hours string `yaml:"hours" json:"hours,omitempty"`
	// Weekdays lists allowed days (mon … sun); empty means every day.
	Weekdays []string `yaml:"weekdays" json:"weekdays,omitempty"`
	// MaxRisk is the highest risk score approved; 0 means no limit.
	MaxRisk int `yaml:"max_risk" json:"max_risk,omitempty"`
	// MaxDuration is the longest duration approved.
	MaxDuration Duration `yaml:"max_duration" json:"max_duration,omitempty"`
}

// Approver is a human who may answer requests that need approval.
type Approver struct {
	Name  string   `yaml:"name" json:"name"`
	Roles []string `yaml:"roles" json:"roles"`
	// TokenSHA256 is the hex SHA-256 of the approver's bearer token. The
	// token itself is never stored.
	TokenSHA256 string `yaml:"token_sha256" json:"token_sha256"`
	// Teams are the teams or groups the approver belongs to. An agent whose
	// owner is the approver's name or one of these teams is owned by the
	// approver (separate_owner, see Approver.Owns).
	Teams []string `yaml:"teams" json:"teams,omitempty"`
}

// GuardrailSource is a system that reports guardrail violations: it may
// fire only its Guardrails, and only against its Agents (every agent if
// empty). Its credential is guardrail-<name>.creds.
type GuardrailSource struct {
	Name       string   `yaml:"name" json:"name"`
	Guardrails []string `yaml:"guardrails" json:"guardrails"`
	Agents     []string `yaml:"agents" json:"agents,omitempty"`
}

// GuardrailSource returns the source named name, or false.
func (c *Config) GuardrailSource(name string) (*GuardrailSource, bool) {
	for i := range c.GuardrailSources {
		if c.GuardrailSources[i].Name == name {
			return &c.GuardrailSources[i], true
		}
	}
	return nil, false
}

// May reports whether the source may fire guardrail against agent.
func (g *GuardrailSource) May(guardrail, agent string) bool {
	return slices.Contains(g.Guardrails, guardrail) && (len(g.Agents) == 0 || slices.Contains(g.Agents, agent))
}

// Guardrail names a guardrail rule that may fire against agents.
type Guardrail struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description" json:"description,omitempty"`
}

// Risk holds the weights of the risk score. Every part is documented in
// docs/configuration.md.
type Risk struct {
	// Sensitivity gives points per permission; "default" applies to the rest.
	Sensitivity map[string]int `yaml:"sensitivity" json:"sensitivity,omitempty"`
	// Duration is the most points a request at the agent's maxJitDuration
	// scores; shorter requests score proportionally less.
	Duration int `yaml:"duration" json:"duration"`
	// OffHours is scored outside BusinessHours (in the configured zone).
	OffHours      int    `yaml:"off_hours" json:"off_hours"`
	BusinessHours string `yaml:"business_hours" json:"business_hours,omitempty"`
	// Breadth is scored for each permission beyond the first.
	Breadth int `yaml:"breadth" json:"breadth"`
	// GuardrailFires, Denials and RequestRate weigh the agent's recent
	// history (see docs/configuration.md).
	GuardrailFires int `yaml:"guardrail_fires" json:"guardrail_fires,omitempty"`
	Denials        int `yaml:"denials" json:"denials,omitempty"`
	RequestRate    int `yaml:"request_rate" json:"request_rate,omitempty"`
}

// Named errors.
var (
	ErrInvalid = errors.New("invalid configuration")
)

// Location returns the configured time zone.
func (c *Config) Location() *time.Location {
	if c.loc == nil {
		return time.UTC
	}
	return c.loc
}

// Agent returns the agent with id, or false.
func (c *Config) Agent(id string) (*Agent, bool) {
	a, ok := c.agents[id]
	return a, ok
}

// Approver returns the approver named name, or false.
func (c *Config) Approver(name string) (*Approver, bool) {
	a, ok := c.approvers[name]
	return a, ok
}

// Guardrail returns the guardrail named name, or false.
func (c *Config) Guardrail(name string) (*Guardrail, bool) {
	for i := range c.Guardrails {
		if c.Guardrails[i].Name == name {
			return &c.Guardrails[i], true
		}
	}
	return nil, false
}

// Authenticate returns the approver whose token hashes to the configured
// digest. It compares in constant time and checks every approver, so its
// timing does not reveal which approver nearly matched.
func (c *Config) Authenticate(token string) (*Approver, bool) {
	if token == "" {
		return nil, false
	}
	sum := sha256.Sum256([]byte(token))
	var found *Approver
	for i := range c.Approvers {
		want, err := hex.DecodeString(c.Approvers[i].TokenSHA256)
		if err != nil || len(want) != len(sum) {
			continue
		}
		if subtle.ConstantTimeCompare(want, sum[:]) == 1 {
			found = &c.Approvers[i]
		}
	}
	return found, found != nil
}

// HashToken returns the hex SHA-256 of a token, as token_sha256 expects.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// HasRole reports whether the approver holds any of roles.
func (a *Approver) HasRole(roles ...string) bool {
	for _, r := range roles {
		if slices.Contains(a.Roles, r) {
			return true
		}
	}
	return false
}

// IsEligible reports whether the agent may request p.
func (a *Agent) IsEligible(p string) bool { return slices.Contains(a.Eligible, p) }

// HasBase reports whether p is one of the agent's standing permissions.
func (a *Agent) HasBase(p string) bool { return slices.Contains(a.Base, p) }

// Matches reports whether the rule applies to agent and permission p.
func (r *Rule) Matches(agent, p string) bool {
	return matchAgent(r.Agents, agent) && matchPerm(r.Permissions, p)
}

func matchAgent(list []string, agent string) bool {
	if len(list) == 0 {
		return true
	}
	for _, a := range list {
		if a == "*" || a == agent {
			return true
		}
	}
	return false
}

func matchPerm(list []string, p string) bool {
	for _, pat := range list {
		if PermissionMatches(pat, p) {
			return true
		}
	}
	return false
}

// PermissionMatches reports whether pattern matches permission p: equal,
// "*", or "area:*" for any permission "area:…".
func PermissionMatches(pattern, p string) bool {
	if pattern == "*" || pattern == p {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(p, prefix)
	}
	return false
}

// Line returns the line of the rule in its source file (0 if unknown).
func (r *Rule) Line() int { return r.line }

// Duration is a time.Duration that reads and writes as "30m", "1h".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText writes the duration as people write it in the file: 30m,
// 1h, 1h30m (not Go's 30m0s).
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(events.FormatDuration(time.Duration(d))), nil
}

// UnmarshalText reads a Go duration string such as "30m" or "1h30m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}
