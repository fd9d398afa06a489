package web

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// Approver tokens are bearer secrets, so the HTTP side (console sign-in and
// the JSON API) checks them as the NATS API does (service.Approvers, one
// lockout for both), counting failures by the client's address: behind a
// reverse proxy every client shares the proxy's address (and its lockout).

// anonymousApprover is the actor of a refusal before the approver is known.
var anonymousApprover = events.Actor{Kind: events.ActorApprover, ID: events.UnknownAgent}

// clientAddr is the address the lockout counts r's failures against.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// presented is token as HTTP request r presented it.
func presented(r *http.Request, token string) service.Presented {
	addr := clientAddr(r)
	return service.Presented{Token: token, Key: "http:" + addr, Caller: addr}
}

// refusedToken answers a refused token: a locked-out address gets
// Retry-After and its 429 unrecorded (an anonymous address must not be able
// to fill the audit stream; the wrong token that locked it out was
// recorded); any other refusal is recorded. It returns the answer.
func (w *Console) refusedToken(ctx context.Context, rw http.ResponseWriter, err error) error {
	var lo *service.LockedOut
	if errors.As(err, &lo) {
		rw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(lo.RetryAfter.Seconds()))))
		return lo.APIError
	}
	var rf *service.Refused
	if errors.As(err, &rf) {
		return w.core.Refuse(ctx, rf.APIError, rf.Rejection)
	}
	return err
}
