package auth

import (
	"encoding/json"
	"errors"
	"fmt"
)

// HeaderRequestInfo is the header in which the NATS server says who made a
// request that crossed a service import into the services' account. The
// server writes it itself, replacing any value the client set.
const HeaderRequestInfo = "Nats-Request-Info"

// Caller is who made an API call, as the broker established it.
type Caller struct {
	// Principal is the caller's principal, from its user JWT's name, which
	// only this system's signing keys can set.
	Principal Principal
	// Account and User are the caller's NATS account and user public keys
	// (empty for an internal call).
	Account, User string
	// Internal is true for a call that did not cross into the services'
	// account: one service calling another, the administrator, or any
	// client of a server that runs without accounts (an unauthenticated
	// deployment, or a test). An internal call is trusted to say in its
	// body on whose behalf it acts.
	Internal bool
}

// ErrNoIdentity is returned for a call whose broker-written identity does
// not name a client principal.
var ErrNoIdentity = errors.New("the caller's credential names no principal")

// requestInfo is the part of the server's Nats-Request-Info that identity
// needs.
type requestInfo struct {
	Account string `json:"acc"`
	User    string `json:"user"`
	NameTag string `json:"name_tag"`
}

// CallerOf returns the caller of a request from its headers. Without
// HeaderRequestInfo the call is internal. With it, the caller is the client
// principal its user JWT names; anything else (a JWT without a principal's
// name, a service's or the administrator's name arriving from outside)
// returns ErrNoIdentity.
func CallerOf(headers map[string][]string) (Caller, error) {
	v := headers[HeaderRequestInfo]
	if len(v) == 0 || v[0] == "" {
		return Caller{Internal: true}, nil
	}
	var ri requestInfo
	if err := json.Unmarshal([]byte(v[0]), &ri); err != nil {
		return Caller{}, fmt.Errorf("%w: unreadable request info: %v", ErrNoIdentity, err)
	}
	p, err := ParsePrincipal(ri.NameTag)
	if err != nil || !p.IsClient() || ri.Account == "" {
		return Caller{}, fmt.Errorf("%w (user %s, name %q)", ErrNoIdentity, ri.User, ri.NameTag)
	}
	return Caller{Principal: p, Account: ri.Account, User: ri.User}, nil
}

// Is reports whether the caller is principal kind:id, or internal.
func (c Caller) Is(kind, id string) bool {
	return c.Internal || (c.Principal.Kind == kind && c.Principal.ID == id)
}

// String names the caller for logs and messages.
func (c Caller) String() string {
	if c.Internal {
		return "internal"
	}
	return c.Principal.String()
}

// AgentCaller returns the caller of a call that arrived on a per-agent
// subject (broker.AgentSubject) for agent: the agent itself, which the
// subject names because the agent account's import maps its calls there.
// The broker's request info must be present (the call crossed an import:
// inside the services' account only the administrator could publish
// there), but it needs no user details, which keeps the broker from
// writing the caller's whole credential into every request.
func AgentCaller(agent string, headers map[string][]string) (Caller, error) {
	v := headers[HeaderRequestInfo]
	if len(v) == 0 || v[0] == "" {
		return Caller{}, fmt.Errorf("%w: a per-agent subject is only reached through an agent's import", ErrNoIdentity)
	}
	var ri requestInfo
	if err := json.Unmarshal([]byte(v[0]), &ri); err != nil || ri.Account == "" {
		return Caller{}, fmt.Errorf("%w: unreadable request info", ErrNoIdentity)
	}
	p := Principal{Kind: KindAgent, ID: agent}
	if err := p.Validate(); err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrNoIdentity, err)
	}
	return Caller{Principal: p, Account: ri.Account, User: ri.User}, nil
}
