package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// The HTTP JSON API (api/openapi.yaml): the approver's token in
// "Authorization: Bearer <token>", JSON in and out, errors as
// broker.APIError with the HTTP status of its Status. No cookies are read
// here, so a browser's ambient credentials can never act through it.

type tokenHandler func(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, token string)

// withToken authenticates the bearer token (the approvers' one check,
// service.Approvers: 401 and jit.rejected when missing or unknown, 429 for
// a locked-out address) and runs h under the service's call admission and
// timeout.
func (w *web) withToken(h tokenHandler) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		ctx, done, ok := w.s.enterHTTP(r.Context())
		if !ok {
			writeAPIError(rw, broker.Errorf(503, events.CodeUnavailable, "the approval service is not running; retry"))
			return
		}
		defer done()
		token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !found {
			token = ""
		}
		p := presented(r, token)
		p.Missing = "no approver token: send it as Authorization: Bearer <token>"
		a, err := w.s.Authenticate(ctx, p, about(r, anonymousApprover))
		if err != nil {
			writeAPIError(rw, w.refusedToken(ctx, rw, err))
			return
		}
		h(ctx, rw, r, a, token)
	}
}

// about is the refusal of HTTP request r by actor, naming the request,
// grant or agent its path is about (if valid ids), so that its jit.rejected
// event carries them (the requestid and grantid extensions).
func about(r *http.Request, actor events.Actor) events.Rejection {
	rej := events.Rejection{Actor: actor}
	switch p := r.Pattern; {
	case strings.Contains(p, "/requests/{id}"):
		if id := r.PathValue("id"); events.ValidID(id) {
			rej.RequestID = id
		}
	case strings.Contains(p, "/grants/{id}"):
		if id := r.PathValue("id"); events.ValidID(id) {
			rej.GrantID = id
		}
	case strings.Contains(p, "/agents/{agent}"):
		if id := r.PathValue("agent"); events.ValidID(id) {
			rej.Agent = id
		}
	}
	return rej
}

// enterHTTP admits an HTTP call like an API call: refused once Stop has
// begun, bounded by apiTimeout, ended by done.
func (s *Service) enterHTTP(parent context.Context) (context.Context, func(), bool) {
	if s.ctx == nil || !s.enter() {
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
	stop := context.AfterFunc(parent, cancel)
	return ctx, func() { stop(); cancel(); s.inflight.Done() }, true
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}

// writeAPIError answers err: an *broker.APIError with its status, anything
// else as 500 without detail.
func writeAPIError(rw http.ResponseWriter, err error) {
	var ae *broker.APIError
	if !errors.As(err, &ae) {
		ae = broker.Errorf(500, "internal", "internal error")
	}
	writeJSON(rw, ae.Status, ae)
}

// decodeJSONBody decodes an API body strictly; an empty body is {}.
func decodeJSONBody(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, broker.MaxAPIBody+1))
	if err != nil {
		return broker.Errorf(400, events.CodeMalformed, "read body: %v", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		b = []byte("{}")
	}
	return broker.DecodeInput(b, v)
}

func (w *web) apiPending(ctx context.Context, rw http.ResponseWriter, _ *http.Request, a *config.Approver, _ string) {
	list, err := w.s.pendingViews(ctx, a)
	w.answerJSON(ctx, rw, map[string]any{"pending": list}, err)
}

func (w *web) apiGrants(ctx context.Context, rw http.ResponseWriter, _ *http.Request, _ *config.Approver, _ string) {
	list, err := w.s.activeGrants(ctx)
	w.answerJSON(ctx, rw, map[string]any{"grants": list}, err)
}

func (w *web) apiRevocations(ctx context.Context, rw http.ResponseWriter, _ *http.Request, _ *config.Approver, _ string) {
	list, err := w.s.recentRevocations(ctx)
	w.answerJSON(ctx, rw, map[string]any{"revocations": list}, err)
}

func (w *web) apiSuspensions(ctx context.Context, rw http.ResponseWriter, _ *http.Request, _ *config.Approver, _ string) {
	list, err := w.s.suspensions(ctx)
	w.answerJSON(ctx, rw, map[string]any{"suspensions": list}, err)
}

func (w *web) answerJSON(ctx context.Context, rw http.ResponseWriter, v any, err error) {
	if err != nil {
		var ae *broker.APIError
		if !errors.As(err, &ae) {
			w.s.log.Error().Err(err).Msg("http api")
		}
		writeAPIError(rw, err)
		return
	}
	writeJSON(rw, http.StatusOK, v)
}

// answerBody is the body of POST /api/v1/requests/{id}/approve and /deny.
type answerBody struct {
	Comment     string   `json:"comment,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
	Duration    string   `json:"duration,omitempty"`
}

func (w *web) apiAnswer(outcome string) tokenHandler {
	return func(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, _ string) {
		var in answerBody
		if err := decodeJSONBody(r, &in); err != nil {
			writeAPIError(rw, w.s.refuseInput(ctx, err, about(r, approverActor(a))))
			return
		}
		res, err := w.s.answer(ctx, a, broker.ApproveInput{RequestID: r.PathValue("id"), Comment: in.Comment,
			Permissions: in.Permissions, Duration: in.Duration}, outcome)
		w.answerJSON(ctx, rw, res, err)
	}
}

// commentBody is the body of revoke and reinstate.
type commentBody struct {
	Comment string `json:"comment,omitempty"`
}

func (w *web) apiRevoke(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, token string) {
	var in commentBody
	if err := decodeJSONBody(r, &in); err != nil {
		writeAPIError(rw, w.s.refuseInput(ctx, err, about(r, approverActor(a))))
		return
	}
	res, err := w.s.revokeGrant(ctx, a, r.PathValue("id"), in.Comment)
	w.answerJSON(ctx, rw, res, err)
}

func (w *web) apiReinstate(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, token string) {
	var in commentBody
	if err := decodeJSONBody(r, &in); err != nil {
		writeAPIError(rw, w.s.refuseInput(ctx, err, about(r, approverActor(a))))
		return
	}
	res, err := w.s.reinstateAgent(ctx, a, r.PathValue("agent"), in.Comment)
	w.answerJSON(ctx, rw, res, err)
}

// revokeGrant asks the revoker (broker.InternalRevoke) to end a grant for
// approver a, whom this service authenticated; the revoker checks the role
// and audits.
func (s *Service) revokeGrant(ctx context.Context, a *config.Approver, grantID, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := broker.Call(ctx, s.d.NC, broker.InternalRevoke, "", broker.Authorized[broker.RevokeInput]{
		Input: broker.RevokeInput{GrantID: grantID, Comment: comment}, By: approverActor(a)}, &res)
	return res, callErr(err)
}

// reinstateAgent asks the revoker (broker.InternalReinstate) to lift a
// suspension for approver a.
func (s *Service) reinstateAgent(ctx context.Context, a *config.Approver, agent, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := broker.Call(ctx, s.d.NC, broker.InternalReinstate, "", broker.Authorized[broker.ReinstateInput]{
		Input: broker.ReinstateInput{Agent: agent, Comment: comment}, By: approverActor(a)}, &res)
	return res, callErr(err)
}

// callErr keeps the revoker's API errors and turns a transport failure into
// a 503 the caller may retry.
func callErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *broker.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return broker.Errorf(503, events.CodeUnavailable, "the revoker did not answer: %v", err)
}

// metrics serves the notification counters in Prometheus' text format.
func (w *web) metrics(rw http.ResponseWriter, _ *http.Request) {
	c := w.s.Counters()
	rw.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, m := range []struct {
		name, help string
		v          int64
	}{
		{"jit_notifications_delivered_total", "Notifications delivered to a notifier.", c.Delivered.Load()},
		{"jit_notifications_failed_total", "Notifications that failed after every attempt.", c.Failed.Load()},
		{"jit_notifications_dropped_total", "Notifications dropped because the queue was full.", c.Dropped.Load()},
		{"jit_notification_retries_total", "Notification attempts retried after a failure.", c.Retries.Load()},
	} {
		fmt.Fprintf(rw, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", m.name, m.help, m.name, m.name, m.v)
	}
}
