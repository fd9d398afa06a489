package approval

import (
	"context"
	"math"
	"net"
	"net/http"
	"strconv"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// Approver tokens are bearer secrets, so the HTTP side (console sign-in and
// the JSON API) slows down guessing with the lockout the NATS API uses
// (service.Lockout), keyed by the client's address: behind a reverse proxy
// every client shares the proxy's address (and its lockout).

// clientAddr is the address the limiter counts r's failures against.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// refuseLocked answers a call from a locked-out address: 429 with
// Retry-After. It returns false if addr is not locked out.
func (w *web) refuseLocked(rw http.ResponseWriter, addr string) bool {
	left, blocked := w.auth.Blocked(addr)
	if !blocked {
		return false
	}
	rw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(left.Seconds()))))
	return true
}

// authFailed records a failed authentication from addr; the failure that
// starts a lockout is audited as such (jit.rejected, code rate_limited).
func (w *web) authFailed(ctx context.Context, addr string) {
	if !w.auth.Fail(addr) {
		return
	}
	_ = w.s.refuse(ctx, broker.Errorf(http.StatusTooManyRequests, events.CodeRateLimited,
		"%d failed approver sign-ins from %s within %s: refusing it for %s", service.MaxAuthFailures, addr, service.AuthWindow, service.AuthWindow),
		events.Rejection{Actor: events.Actor{Kind: events.ActorApprover, ID: events.UnknownAgent}})
}
