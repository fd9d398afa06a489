// Package contract checks messages against the published contract: the
// JSON Schemas in api/schemas (the same as api/asyncapi.yaml's
// components.schemas). The end-to-end tests validate every event on the
// stream and every jitapi call they make with it.
package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// EventSchemas names the data schema of every event type.
var EventSchemas = map[string]string{
	events.TypeRequested:      "request",
	events.TypeRejected:       "rejection",
	events.TypeDecided:        "decision",
	events.TypeGranted:        "grant",
	events.TypeRevoked:        "revocation",
	events.TypeGuardrailFired: "guardrail-fired",
	events.TypeSuspended:      "suspension",
	events.TypeReinstated:     "reinstatement",
	events.TypeConfigApplied:  "config-applied",
	events.TypeApproved:       "approval",
	events.TypeNotification:   "notification",
	events.TypeWithdrawn:      "withdrawal",
	events.TypeCheckpoint:     "checkpoint",
}

// Envelope is the schema of the CloudEvent around every event's data.
const Envelope = "cloudevent"

// ErrorSchema is the schema of every endpoint's error answer.
const ErrorSchema = "api-error"

// APIConfigApply is the configuration endpoint: the approval service
// authenticates the call and the policy service applies the file
// (broker.APIConfigApply; not imported, to keep this package light: the
// contract test checks that the two agree).
const APIConfigApply = "jitapi.config.apply"

// Endpoint names the request and reply schemas of a jitapi subject.
type Endpoint struct{ Request, Reply string }

// Endpoints are every jitapi subject the services serve.
var Endpoints = map[string]Endpoint{
	broker.APIRequest:   {"api-request-input", "api-request-accepted"},
	broker.APIWithdraw:  {"api-withdraw-input", "api-action-result"},
	broker.APIDone:      {"api-done-input", "api-action-result"},
	broker.APIEvents:    {"api-events-input", "api-events-page"},
	broker.APIGrants:    {"api-grants-input", "api-grants-list"},
	broker.APICheck:     {"api-check-input", "api-check-result"},
	broker.APIPending:   {"api-pending-input", "api-pending-list"},
	broker.APIApprove:   {"api-approve-input", "api-action-result"},
	broker.APIDeny:      {"api-deny-input", "api-action-result"},
	broker.APIRevoke:    {"api-revoke-input", "api-action-result"},
	broker.APIReinstate: {"api-reinstate-input", "api-action-result"},
	APIConfigApply:      {"api-config-apply-input", "api-config-apply-result"},
}

// GuardrailAck is the schema of the guardrail ingress's answer to a
// guardrail source's guardrail.fired publish: where it was stored, or why
// it was refused (in the body, as JetStream answers a publish, not in the
// error headers of the jitapi endpoints). The event itself is checked with
// ValidateEvent.
const GuardrailAck = "guardrail-ack"

// ErrNoSchema is a message for which the contract has no schema.
var ErrNoSchema = errors.New("no schema in the contract")

// Contract is the compiled schemas.
type Contract struct {
	schemas map[string]*jsonschema.Schema
}

// Load compiles every schema file in dir (api/schemas), asserting formats
// (date-time and the like).
func Load(dir string) (*Contract, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no schemas in %s: %v", dir, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	names := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		url := "file:///api/schemas/" + filepath.Base(f)
		if err := c.AddResource(url, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		names[strings.TrimSuffix(filepath.Base(f), ".json")] = url
	}
	ct := &Contract{schemas: map[string]*jsonschema.Schema{}}
	for name, url := range names {
		s, err := c.Compile(url)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		ct.schemas[name] = s
	}
	return ct, nil
}

// Names lists the compiled schemas.
func (c *Contract) Names() []string {
	out := make([]string, 0, len(c.schemas))
	for n := range c.schemas {
		out = append(out, n)
	}
	return out
}

// Validate checks a JSON document against the named schema.
func (c *Contract) Validate(name string, doc []byte) error {
	s, ok := c.schemas[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoSchema, name)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("%s: not JSON: %w", name, err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// ValidateEvent checks a stored message: a structured-mode CloudEvent
// against the envelope and its data against the schema of its type (a
// binary-mode one: its data only). An event type without a schema is
// ErrNoSchema.
func (c *Contract) ValidateEvent(header map[string][]string, body []byte) error {
	typ, data := "", body
	binary := false
	for k, v := range header {
		if strings.EqualFold(k, "ce-type") && len(v) > 0 {
			typ, binary = v[0], true
		}
	}
	if !binary {
		if err := c.Validate(Envelope, body); err != nil {
			return err
		}
		var env struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			return err
		}
		typ, data = env.Type, env.Data
	}
	name, ok := EventSchemas[typ]
	if !ok {
		return fmt.Errorf("%w: event type %q", ErrNoSchema, typ)
	}
	return c.Validate(name, data)
}

// ValidateRequest checks the body of a call to a jitapi subject. An empty
// body counts as {} (jitapi.pending, jitapi.events and jitapi.grants take
// either).
func (c *Contract) ValidateRequest(subject string, body []byte) error {
	ep, ok := Endpoints[subject]
	if !ok {
		return fmt.Errorf("%w: subject %s", ErrNoSchema, subject)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	return c.Validate(ep.Request, body)
}

// ValidateReply checks the answer to a call to subject: an error answer
// (the Nats-Service-Error-Code header) against the error schema, any other
// against the endpoint's reply schema.
func (c *Contract) ValidateReply(subject string, header map[string][]string, body []byte) error {
	ep, ok := Endpoints[subject]
	if !ok {
		return fmt.Errorf("%w: subject %s", ErrNoSchema, subject)
	}
	for k := range header {
		if k == "Nats-Service-Error-Code" {
			return c.Validate(ErrorSchema, body)
		}
	}
	return c.Validate(ep.Reply, body)
}
