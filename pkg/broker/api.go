package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// API subjects: request-reply endpoints served by the services (core NATS,
// outside the audit stream's subjects so requests are never stored as
// events).
const (
	APIRequest   = "jitapi.request"   // requester: ask for elevation
	APIPending   = "jitapi.pending"   // approval: list requests waiting for a human
	APIApprove   = "jitapi.approve"   // approval: approve a pending request
	APIDeny      = "jitapi.deny"      // approval: deny a pending request
	APIDone      = "jitapi.done"      // revoker: the agent's task is done
	APIReinstate = "jitapi.reinstate" // revoker: lift a suspension
	APIRevoke    = "jitapi.revoke"    // revoker: an admin ends a grant now
	APIWithdraw  = "jitapi.withdraw"  // requester: the agent withdraws a request it no longer waits for
)

// HeaderToken carries an approver's bearer token on API calls.
const HeaderToken = "Jit-Token"

// MaxAPIBody bounds an API request body.
const MaxAPIBody = 16 << 10

// RequestInput is the body of an APIRequest call.
type RequestInput struct {
	// RequestID is optional: a client that retries passes the same id so the
	// request is stored once.
	RequestID   string            `json:"request_id,omitempty"`
	Agent       string            `json:"agent"`
	Permissions []string          `json:"permissions"`
	Duration    string            `json:"duration"` // Go duration: "30m"
	Reason      string            `json:"reason"`
	Context     map[string]string `json:"context,omitempty"`
}

// RequestAccepted is the reply to an accepted request. Seq is the audit
// stream sequence of its jit.requested event: the outcome follows it on
// jit.decided.<agent> and jit.granted.<agent>.
type RequestAccepted struct {
	RequestID string `json:"request_id"`
	Seq       uint64 `json:"seq"`
}

// ApproveInput is the body of APIApprove and APIDeny calls.
type ApproveInput struct {
	RequestID string `json:"request_id"`
	Comment   string `json:"comment,omitempty"`
	// Permissions, on approve, narrows the grant to a subset of the
	// requested permissions; empty means all of them.
	Permissions []string `json:"permissions,omitempty"`
	// Duration, on approve, shortens the grant (Go duration, "10m"); empty
	// means the requested duration.
	Duration string `json:"duration,omitempty"`
}

// RevokeInput is the body of APIRevoke.
type RevokeInput struct {
	GrantID string `json:"grant_id"`
	Comment string `json:"comment,omitempty"`
}

// WithdrawInput is the body of APIWithdraw.
type WithdrawInput struct {
	RequestID string `json:"request_id"`
	Agent     string `json:"agent"`
}

// ActionResult is the reply to approve, deny, done and reinstate.
type ActionResult struct {
	RequestID string `json:"request_id,omitempty"`
	GrantID   string `json:"grant_id,omitempty"`
	Agent     string `json:"agent,omitempty"`
	Outcome   string `json:"outcome"`
	Message   string `json:"message,omitempty"`
}

// PendingList is the reply to APIPending.
type PendingList struct {
	Pending []PendingItem `json:"pending"`
}

// PendingItem is one request waiting for a human.
type PendingItem struct {
	Decision events.Decision `json:"decision"`
	Deadline time.Time       `json:"deadline"`
}

// DoneInput is the body of APIDone.
type DoneInput struct {
	GrantID string `json:"grant_id"`
}

// ReinstateInput is the body of APIReinstate.
type ReinstateInput struct {
	Agent   string `json:"agent"`
	Comment string `json:"comment,omitempty"`
}

// APIError is an error answer of an endpoint. Status follows HTTP's
// meaning (400 bad input, 401, 403, 404, 409, 500); Code is one of the
// events.Code… values.
type APIError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return e.Message }

// Errorf returns an *APIError.
func Errorf(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Respond answers req with v as JSON, or with err as an API error. An error
// that is not an *APIError is answered as 500 without its detail.
func Respond(req micro.Request, v any, err error) {
	if err != nil {
		var ae *APIError
		if !errors.As(err, &ae) {
			ae = &APIError{Status: 500, Code: "internal", Message: "internal error"}
		}
		body, _ := json.Marshal(ae)
		_ = req.Error(strconv.Itoa(ae.Status), ae.Message, body)
		return
	}
	_ = req.RespondJSON(v)
}

// Call sends in to subject and decodes the answer into out. An error answer
// is returned as *APIError. token, if set, travels in HeaderToken.
func Call(ctx context.Context, nc *nats.Conn, subject, token string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subject)
	m.Data = body
	if token != "" {
		m.Header.Set(HeaderToken, token)
	}
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("no service answers %s: is the system running? %w", subject, err)
		}
		return fmt.Errorf("call %s: %w", subject, err)
	}
	if code := resp.Header.Get(micro.ErrorCodeHeader); code != "" {
		var ae APIError
		if json.Unmarshal(resp.Data, &ae) != nil || ae.Message == "" {
			st, _ := strconv.Atoi(code)
			ae = APIError{Status: st, Code: "error", Message: resp.Header.Get(micro.ErrorHeader)}
		}
		return &ae
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Data, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", subject, err)
	}
	return nil
}

// DecodeInput decodes an API body strictly: size-bounded, unknown fields
// refused. The error is a 400 *APIError.
func DecodeInput(data []byte, v any) error {
	if len(data) > MaxAPIBody {
		return Errorf(413, events.CodeTooLarge, "request body is %d bytes; the limit is %d", len(data), MaxAPIBody)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Errorf(400, events.CodeMalformed, "malformed request body: expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(400, events.CodeMalformed, "malformed request body: %v", err)
	}
	if dec.More() {
		return Errorf(400, events.CodeMalformed, "malformed request body: data after the JSON object")
	}
	return nil
}
