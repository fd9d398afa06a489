package approval

import (
	"context"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// Approver tokens are bearer secrets, so the HTTP side (console sign-in and
// the JSON API) slows down guessing: a client address that fails
// authentication maxAuthFailures times within authWindow is refused with
// 429 until the window ends, valid tokens included, so that a guesser
// learns nothing meanwhile. The lockout is audited once, when it starts.
//
// The address is the connection's peer: behind a reverse proxy every client
// shares the proxy's address (and its lockout). The NATS API is not covered:
// who may publish on jitapi.* is the NATS server's accounts' business.
const (
	maxAuthFailures = 10
	authWindow      = time.Minute
	// maxAuthTracked bounds the addresses remembered at once; past it, an
	// address not seen yet is not tracked (its failures still cost it a
	// round trip each and are audited one by one).
	maxAuthTracked = 10_000
)

type authLimiter struct {
	now func() time.Time

	mu     sync.Mutex
	byAddr map[string]*authFailures
}

type authFailures struct {
	start time.Time // of the window
	n     int
}

func newAuthLimiter(now func() time.Time) *authLimiter {
	return &authLimiter{now: now, byAddr: map[string]*authFailures{}}
}

// blocked reports whether addr is locked out, and for how much longer.
func (l *authLimiter) blocked(addr string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.byAddr[addr]
	if f == nil || f.n < maxAuthFailures {
		return 0, false
	}
	left := f.start.Add(authWindow).Sub(l.now())
	if left <= 0 {
		delete(l.byAddr, addr)
		return 0, false
	}
	return left, true
}

// fail records a failed authentication from addr and reports whether it
// starts a lockout.
func (l *authLimiter) fail(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.byAddr[addr]
	if f != nil && now.Sub(f.start) >= authWindow {
		f = nil
	}
	if f == nil {
		if len(l.byAddr) >= maxAuthTracked {
			l.pruneLocked(now)
			if len(l.byAddr) >= maxAuthTracked {
				return false
			}
		}
		f = &authFailures{start: now}
		l.byAddr[addr] = f
	}
	f.n++
	return f.n == maxAuthFailures
}

// succeed forgets addr's failures.
func (l *authLimiter) succeed(addr string) {
	l.mu.Lock()
	delete(l.byAddr, addr)
	l.mu.Unlock()
}

func (l *authLimiter) pruneLocked(now time.Time) {
	for a, f := range l.byAddr {
		if now.Sub(f.start) >= authWindow {
			delete(l.byAddr, a)
		}
	}
}

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
	left, blocked := w.auth.blocked(addr)
	if !blocked {
		return false
	}
	rw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(left.Seconds()))))
	return true
}

// authFailed records a failed authentication from addr; the failure that
// starts a lockout is audited as such (jit.rejected, code rate_limited).
func (w *web) authFailed(ctx context.Context, addr string) {
	if !w.auth.fail(addr) {
		return
	}
	_ = w.s.refuse(ctx, broker.Errorf(http.StatusTooManyRequests, events.CodeRateLimited,
		"%d failed approver sign-ins from %s within %s: refusing it for %s", maxAuthFailures, addr, authWindow, authWindow),
		events.Rejection{Actor: events.Actor{Kind: events.ActorApprover, ID: events.UnknownAgent}})
}
