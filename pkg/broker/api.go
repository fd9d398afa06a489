package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	APIEvents    = "jitapi.events"    // requester: the calling agent's own events from the audit stream
	APIGrants    = "jitapi.grants"    // requester: the calling agent's own grants
	APICheck     = "jitapi.check"     // requester: may the calling agent use a permission now?
	// APIConfigApply validates and stores a configuration (an org-admin's
	// or security-admin's token); the approval service authenticates it
	// and the policy service applies it.
	APIConfigApply = "jitapi.config.apply"
)

// AgentAPIPrefix starts the subjects on which an agent's own calls arrive
// in the services' account: each agent account's imports map the agent
// API (jitapi.request, …) it publishes to AgentSubject(agent, subject), so
// the subject itself, which only the operator-signed account can choose,
// says which agent calls. Services serve them beside the shared subjects.
const AgentAPIPrefix = "jitapi.agent"

// AgentSubject is where agent's call of API subject (an APIxxx under
// "jitapi.") arrives: "jitapi.agent.<agent>.<verb>"; agent "*" gives the
// wildcard a service subscribes to.
func AgentSubject(agent, subject string) string {
	return AgentAPIPrefix + "." + agent + "." + strings.TrimPrefix(subject, "jitapi.")
}

// AgentOfAPISubject returns the agent a per-agent subject names, if subject is
// AgentSubject(agent, api).
func AgentOfAPISubject(subject, api string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, AgentAPIPrefix+".")
	if !ok {
		return "", false
	}
	agent, verb, ok := strings.Cut(rest, ".")
	if !ok || agent == "" || verb != strings.TrimPrefix(api, "jitapi.") {
		return "", false
	}
	return agent, true
}

// Internal subjects: requests between services inside the services'
// account, which only the approval service may publish. The approval
// service authenticates approvers (it alone sees their tokens and their
// hashes) and forwards an authorised action to the service that owns it,
// naming the approver in the body.
const (
	InternalPrefix      = "jitint"
	InternalReinstate   = InternalPrefix + ".revoker.reinstate"
	InternalRevoke      = InternalPrefix + ".revoker.revoke"
	InternalConfigApply = InternalPrefix + ".policy.config.apply"
)

// Live feeds: the audit stream republishes every event it stores on
// LivePrefix.<subject> (for example jitlive.jit.granted.market-intel), and
// the grants, suspensions and configuration buckets republish every stored
// change on StatePrefix.<bucket>.<key>, each with the stream's Nats-Sequence
// header. Clients that may not create consumers follow them instead.
const (
	LivePrefix  = "jitlive"
	StatePrefix = "jitkv"
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

// EventsInput is the body of APIEvents: the calling agent's events on the
// audit stream (subjects jit.*.<agent> and guardrail.*.<agent>) from stream
// sequence FromSeq on, at most Max (default and limit MaxEventsPage).
type EventsInput struct {
	FromSeq uint64 `json:"from_seq,omitempty"`
	Max     int    `json:"max,omitempty"`
	// Agent is optional; an agent may name only itself.
	Agent string `json:"agent,omitempty"`
}

// MaxEventsPage bounds one APIEvents answer.
const MaxEventsPage = 256

// EventsPage is the reply to APIEvents. Each event is a structured-mode
// CloudEvent with its stream sequence and subject; NextSeq is where the next
// call starts, and More says whether the stream had more of the agent's
// events when this page was read.
type EventsPage struct {
	Events  []StoredEvent `json:"events"`
	NextSeq uint64        `json:"next_seq"`
	More    bool          `json:"more"`
}

// StoredEvent is one event of an EventsPage.
type StoredEvent struct {
	Seq     uint64          `json:"seq"`
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event"`
}

// GrantsInput is the body of APIGrants (optional).
type GrantsInput struct {
	// Agent is optional; an agent may name only itself.
	Agent string `json:"agent,omitempty"`
}

// GrantsList is the reply to APIGrants: the calling agent's grants that are
// active by the server's clock.
type GrantsList struct {
	Grants []events.Grant `json:"grants"`
}

// CheckInput is the body of APICheck.
type CheckInput struct {
	Permission string `json:"permission"`
	// Agent is optional; an agent may name only itself.
	Agent string `json:"agent,omitempty"`
}

// CheckResult is the reply to APICheck: the checker's rule (a base
// permission of a known, non-suspended agent, or an active grant whose
// expires_at is after the service's clock), answered from the buckets.
type CheckResult struct {
	Allowed   bool       `json:"allowed"`
	Reason    string     `json:"reason"`
	Base      bool       `json:"base,omitempty"`
	GrantID   string     `json:"grant_id,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// WithdrawInput is the body of APIWithdraw.
type WithdrawInput struct {
	RequestID string `json:"request_id"`
	Agent     string `json:"agent"`
}

// MaxConfigBody bounds an APIConfigApply body (NATS's payload limit, less
// room for the internal call that carries it on).
const MaxConfigBody = 1<<20 - 4<<10

// ConfigApplyInput is the body of an APIConfigApply call.
type ConfigApplyInput struct {
	// Source names the file; errors and the audit event name it.
	Source string `json:"source"`
	// YAML is the file's content.
	YAML string `json:"yaml"`
}

// ConfigApplyResult is the answer to an applied (or unchanged)
// configuration. A refused one is answered 400 invalid_config with every
// problem in the message.
type ConfigApplyResult struct {
	Outcome  string `json:"outcome"` // applied | unchanged
	Source   string `json:"source"`
	Revision uint64 `json:"revision"`
	Digest   string `json:"digest"`
}

// Authorized is the body of an internal call: the input of the API call
// that the approval service authenticated, and the approver who made it.
type Authorized[T any] struct {
	Input T            `json:"input"`
	By    events.Actor `json:"by"`
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
func DecodeInput(data []byte, v any) error { return DecodeInputLimit(data, v, MaxAPIBody) }

// DecodeInputLimit is DecodeInput with a size limit of max bytes.
func DecodeInputLimit(data []byte, v any, max int) error {
	if len(data) > max {
		return Errorf(413, events.CodeTooLarge, "request body is %d bytes; the limit is %d", len(data), max)
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
