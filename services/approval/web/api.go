package web

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
	"github.com/agentjit/jit/pkg/service"
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
func (w *Console) withToken(h tokenHandler) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		ctx, done, ok := w.core.Enter(r.Context())
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
		a, err := w.core.Authenticate(ctx, p, about(r, anonymousApprover))
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

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}

// refuseInput records a body that does not decode, as a refusal r (who
// sent it, and the request or grant it was about, as far as known).
func (w *Console) refuseInput(ctx context.Context, err error, r events.Rejection) error {
	var ae *broker.APIError
	if !errors.As(err, &ae) {
		ae = broker.Errorf(400, events.CodeMalformed, "malformed request body: %v", err)
	}
	return w.core.Refuse(ctx, ae, r)
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

func (w *Console) apiPending(ctx context.Context, rw http.ResponseWriter, _ *http.Request, a *config.Approver, _ string) {
	list, err := w.core.Pending(ctx, a)
	w.answerJSON(ctx, rw, map[string]any{"pending": list}, err)
}

func (w *Console) apiGrants(ctx context.Context, rw http.ResponseWriter, _ *http.Request, _ *config.Approver, _ string) {
	list, err := w.activeGrants(ctx)
	w.answerJSON(ctx, rw, map[string]any{"grants": list}, err)
}

func (w *Console) apiRevocations(ctx context.Context, rw http.ResponseWriter, _ *http.Request, _ *config.Approver, _ string) {
	list, err := w.recentRevocations(ctx)
	w.answerJSON(ctx, rw, map[string]any{"revocations": list}, err)
}

func (w *Console) apiSuspensions(ctx context.Context, rw http.ResponseWriter, _ *http.Request, _ *config.Approver, _ string) {
	list, err := w.suspensions(ctx)
	w.answerJSON(ctx, rw, map[string]any{"suspensions": list}, err)
}

func (w *Console) answerJSON(ctx context.Context, rw http.ResponseWriter, v any, err error) {
	if err != nil {
		var ae *broker.APIError
		if !errors.As(err, &ae) {
			w.log.Error().Err(err).Msg("http api")
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

func (w *Console) apiAnswer(outcome string) tokenHandler {
	return func(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, _ string) {
		var in answerBody
		if err := decodeJSONBody(r, &in); err != nil {
			writeAPIError(rw, w.refuseInput(ctx, err, about(r, service.ApproverActor(a))))
			return
		}
		res, err := w.core.Answer(ctx, a, broker.ApproveInput{RequestID: r.PathValue("id"), Comment: in.Comment,
			Permissions: in.Permissions, Duration: in.Duration}, outcome)
		w.answerJSON(ctx, rw, res.ActionResult, err)
	}
}

// commentBody is the body of revoke and reinstate.
type commentBody struct {
	Comment string `json:"comment,omitempty"`
}

func (w *Console) apiRevoke(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, token string) {
	var in commentBody
	if err := decodeJSONBody(r, &in); err != nil {
		writeAPIError(rw, w.refuseInput(ctx, err, about(r, service.ApproverActor(a))))
		return
	}
	res, err := w.core.Revoke(ctx, a, r.PathValue("id"), in.Comment)
	w.answerJSON(ctx, rw, res, err)
}

func (w *Console) apiReinstate(ctx context.Context, rw http.ResponseWriter, r *http.Request, a *config.Approver, token string) {
	var in commentBody
	if err := decodeJSONBody(r, &in); err != nil {
		writeAPIError(rw, w.refuseInput(ctx, err, about(r, service.ApproverActor(a))))
		return
	}
	res, err := w.core.Reinstate(ctx, a, r.PathValue("agent"), in.Comment)
	w.answerJSON(ctx, rw, res, err)
}

// metrics serves the notification counters in Prometheus' text format.
func (w *Console) metrics(rw http.ResponseWriter, _ *http.Request) {
	rw.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, m := range w.core.Counters().Series() {
		fmt.Fprintf(rw, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", m.Name, m.Help, m.Name, m.Name, m.Value)
	}
}
