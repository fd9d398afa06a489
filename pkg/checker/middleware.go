package checker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// GrantHeader names the header in which an agent may present the id of the
// grant it holds (grt_…), e.g. right after Request returned it. The grant
// id decides nothing: Require only waits, up to the WithGrantWait bound,
// for the checker's view to hold that grant before it decides from the
// view as always.
const GrantHeader = "Jit-Grant"

// DefaultGrantWait is the WithGrantWait bound used when none is given.
const DefaultGrantWait = 2 * time.Second

// WithGrantWait bounds how long Require waits for a grant presented in
// GrantHeader to reach the checker's view (its watch may deliver a fresh
// grant a few milliseconds after the agent learnt of it). d <= 0 disables
// the wait: a grant the view does not hold yet is refused at once.
func WithGrantWait(d time.Duration) Option { return func(c *Checker) { c.grantWait = d } }

// IdentityFunc names the agent that sent r from what was authenticated
// about it — a verified TLS client certificate, a verified token — never
// from a field the client may set freely. It returns ErrNoIdentity (or any
// error) when r carries no acceptable identity.
type IdentityFunc func(r *http.Request) (agent string, err error)

// ErrNoIdentity means a request carries no authenticated identity.
var ErrNoIdentity = errors.New("no authenticated identity")

type agentKey struct{}

// AgentFrom returns the agent that Require admitted for the request whose
// context is ctx.
func AgentFrom(ctx context.Context) (string, bool) {
	a, ok := ctx.Value(agentKey{}).(string)
	return a, ok
}

// Denial is the JSON body of a refusal by Require.
type Denial struct {
	Error      string `json:"error"` // unauthenticated | forbidden | stale
	Agent      string `json:"agent,omitempty"`
	Permission string `json:"permission"`
	Reason     string `json:"reason"`
}

// Require returns net/http middleware that enforces perm on every request:
// it names the agent with id, then lets the request through only if
// Check(agent, perm) allows it, with the agent in the request's context
// (AgentFrom). A request refused for want of a grant that presents a grant
// id in GrantHeader which the view does not hold yet is decided again once
// the view holds it (at most WithGrantWait later): the agent may use a grant
// the moment Request returns it. Refusals are JSON Denial bodies: 401 when id names nobody,
// 403 when the permission is refused (suspended, no live grant, unknown
// agent), 503 with Retry-After when only the checker's stale view refuses
// it. The decision is local: no network call per request.
//
//	mux.Handle("POST /prices/{sku}", chk.Require("data:write", id)(setPrice))
func (c *Checker) Require(perm string, id IdentityFunc) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			agent, err := id(r)
			if err != nil || agent == "" {
				reason := ErrNoIdentity.Error()
				if err != nil {
					reason = err.Error()
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="jit"`)
				writeDenial(w, http.StatusUnauthorized, Denial{Error: "unauthenticated", Permission: perm, Reason: reason})
				return
			}
			res := c.Check(agent, perm)
			if !res.Allowed && !res.Stale && c.awaitPresented(r, agent) {
				res = c.Check(agent, perm)
			}
			switch {
			case res.Allowed:
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), agentKey{}, agent)))
			case res.Stale:
				w.Header().Set("Retry-After", "1")
				writeDenial(w, http.StatusServiceUnavailable, Denial{Error: "stale", Agent: agent, Permission: perm, Reason: res.Reason})
			default:
				writeDenial(w, http.StatusForbidden, Denial{Error: "forbidden", Agent: agent, Permission: perm, Reason: res.Reason})
			}
		})
	}
}

// awaitPresented waits for the grant r presents in GrantHeader to reach the
// view, if it is a grant id the view does not hold yet, and reports whether
// it arrived. The wait ends with the request's context or the bound.
func (c *Checker) awaitPresented(r *http.Request, agent string) bool {
	id := r.Header.Get(GrantHeader)
	if c.grantWait <= 0 || !strings.HasPrefix(id, "grt_") || !events.ValidID(id) {
		return false
	}
	c.mu.RLock()
	_, held := c.grants[agent][id]
	c.mu.RUnlock()
	if held {
		return false // the view has it: the refusal stands
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.grantWait)
	defer cancel()
	return c.AwaitGrant(ctx, agent, id)
}

func writeDenial(w http.ResponseWriter, status int, d Denial) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(d)
}

// ClientCertIdentity names the agent by the common name of the request's
// verified TLS client certificate (the server must require and verify
// client certificates: tls.RequireAndVerifyClientCert).
func ClientCertIdentity(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", ErrNoIdentity
	}
	cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", ErrNoIdentity
	}
	return cn, nil
}

// BearerTokens names the agent by an "Authorization: Bearer <token>" header
// looked up in tokens (token → agent). Tokens are compared by their SHA-256
// in constant time. It suits static service-account tokens; put a verifier
// of signed tokens (JWT, OIDC) behind an IdentityFunc of your own.
func BearerTokens(tokens map[string]string) IdentityFunc {
	type entry struct {
		sum   [sha256.Size]byte
		agent string
	}
	table := make([]entry, 0, len(tokens))
	for tok, agent := range tokens {
		table = append(table, entry{sha256.Sum256([]byte(tok)), agent})
	}
	return func(r *http.Request) (string, error) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			return "", ErrNoIdentity
		}
		sum := sha256.Sum256([]byte(tok))
		agent := ""
		for _, e := range table {
			if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 {
				agent = e.agent
			}
		}
		if agent == "" {
			return "", errors.New("unknown bearer token")
		}
		return agent, nil
	}
}
