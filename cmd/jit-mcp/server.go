package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Version is the MCP server's version.
const Version = "0.1.0"

// tools serves the JIT tools for one agent. The agent is fixed when the
// server is built (its configuration), never taken from a tool's
// arguments: a model cannot ask on behalf of another agent.
type tools struct {
	agent  string
	client *sdk.Client
}

// RequestInput is request_elevation's input.
type RequestInput struct {
	Permissions []string          `json:"permissions" jsonschema:"the permissions needed, exactly as named by the system, e.g. [\"data:write\"]; ask only for what the task needs"`
	Duration    string            `json:"duration" jsonschema:"how long the task needs them, as a Go duration such as \"15m\" or \"1h\"; keep it short, the grant ends by itself at expiry"`
	Reason      string            `json:"reason" jsonschema:"one or two sentences a human approver reads: what the task is and why it needs these permissions"`
	Context     map[string]string `json:"context,omitempty" jsonschema:"optional task context shown to approvers and kept in the audit trail, e.g. {\"ticket\": \"OPS-42\"}"`
}

// RequestOutput is request_elevation's result.
type RequestOutput struct {
	Outcome     string    `json:"outcome" jsonschema:"granted, denied, or refused (the input was not acceptable)"`
	GrantID     string    `json:"grant_id,omitempty" jsonschema:"the grant to pass to release_elevation when the task is done"`
	RequestID   string    `json:"request_id,omitempty"`
	Permissions []string  `json:"permissions,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero" jsonschema:"the grant stops counting at this instant"`
	Reason      string    `json:"reason,omitempty" jsonschema:"why it was denied or refused"`
	Mode        string    `json:"mode,omitempty" jsonschema:"how it was decided: auto-approve, policy, human, deny, timeout, ..."`
}

// ReleaseInput is release_elevation's input.
type ReleaseInput struct {
	GrantID string `json:"grant_id" jsonschema:"the grant_id returned by request_elevation"`
}

// ReleaseOutput is release_elevation's result.
type ReleaseOutput struct {
	GrantID string `json:"grant_id"`
	Outcome string `json:"outcome" jsonschema:"released"`
}

// CheckInput is check_permission's input.
type CheckInput struct {
	Permission string `json:"permission" jsonschema:"one permission, e.g. \"data:write\""`
}

// CheckOutput is check_permission's result.
type CheckOutput struct {
	Permission string    `json:"permission"`
	Allowed    bool      `json:"allowed"`
	Reason     string    `json:"reason"`
	Base       bool      `json:"base,omitempty" jsonschema:"true for a standing permission that needs no request"`
	GrantID    string    `json:"grant_id,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
}

// ListInput is list_my_grants's input (none).
type ListInput struct{}

// GrantItem is one live grant.
type GrantItem struct {
	GrantID     string    `json:"grant_id"`
	Permissions []string  `json:"permissions"`
	ExpiresAt   time.Time `json:"expires_at"`
	Reason      string    `json:"reason"`
}

// ListOutput is list_my_grants's result.
type ListOutput struct {
	Agent  string      `json:"agent"`
	Grants []GrantItem `json:"grants"`
}

// newServer returns the MCP server with the four JIT tools for t.agent.
func newServer(t *tools) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "jit", Title: "Just-in-time access", Version: Version}, &mcp.ServerOptions{
		Instructions: "You act as agent " + t.agent + ", which holds only its base permissions. " +
			"Before an action that needs more, call check_permission; if it is not allowed, call request_elevation " +
			"with the narrowest permissions, the shortest duration and a clear reason, and wait for the answer. " +
			"When the task is done call release_elevation. Never retry a denied request unchanged.",
	})
	mcp.AddTool(s, &mcp.Tool{
		Name:  "request_elevation",
		Title: "Request temporary permissions",
		Description: "Ask for temporary (just-in-time) permissions for " + t.agent + ". Blocks until decided: " +
			"auto-approved at once, decided by policy, or by a human approver (which may take minutes). " +
			"Returns outcome granted with a grant_id and expires_at, or denied / refused with the reason. " +
			"Ask only for permissions the current task needs, for as short as it needs them. " +
			"Call release_elevation with the grant_id as soon as the task is done.",
	}, t.request)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "release_elevation",
		Title:       "Release a grant",
		Description: "End a grant obtained with request_elevation because the task is done. Always call it when finished; the permissions stop at once.",
	}, t.release)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "check_permission",
		Title:       "Check a permission",
		Description: "Tell whether " + t.agent + " may use a permission right now (a standing permission or a live grant), and why. Cheap: call it before acting.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, t.check)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "list_my_grants",
		Title:       "List my grants",
		Description: "List the live grants of " + t.agent + " with their permissions and expiry.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, t.list)
	return s
}

func (t *tools) request(ctx context.Context, _ *mcp.CallToolRequest, in RequestInput) (*mcp.CallToolResult, RequestOutput, error) {
	d, err := time.ParseDuration(strings.TrimSpace(in.Duration))
	if err != nil {
		return refused(fmt.Sprintf("duration %q is not a duration such as \"15m\"", in.Duration))
	}
	// ctx is the MCP request's: a client that cancels the call withdraws
	// the request.
	g, err := t.client.Request(ctx, in.Permissions, d, in.Reason, in.Context)
	var de *sdk.DeniedError
	var re *sdk.RefusedError
	switch {
	case err == nil:
		return nil, RequestOutput{Outcome: "granted", GrantID: g.ID(), RequestID: g.RequestID(),
			Permissions: g.Permissions(), ExpiresAt: g.ExpiresAt(), Mode: g.Info().Mode}, nil
	case errors.As(err, &de):
		return nil, RequestOutput{Outcome: "denied", RequestID: de.RequestID, Reason: de.Reason, Mode: de.Mode}, nil
	case errors.As(err, &re):
		return refused(re.Message)
	default:
		return nil, RequestOutput{}, err
	}
}

func refused(msg string) (*mcp.CallToolResult, RequestOutput, error) {
	out := RequestOutput{Outcome: "refused", Reason: msg}
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "refused: " + msg}}}, out, nil
}

func (t *tools) release(ctx context.Context, _ *mcp.CallToolRequest, in ReleaseInput) (*mcp.CallToolResult, ReleaseOutput, error) {
	// jitapi.done ends only the calling agent's own grants; say so plainly
	// for a grant that is not live.
	grants, err := t.grants(ctx)
	if err != nil {
		return nil, ReleaseOutput{}, err
	}
	if !slices.ContainsFunc(grants, func(g events.Grant) bool { return g.GrantID == in.GrantID }) {
		return nil, ReleaseOutput{}, fmt.Errorf("%s holds no live grant %q (see list_my_grants)", t.agent, in.GrantID)
	}
	if err := t.client.Done(ctx, in.GrantID); err != nil {
		return nil, ReleaseOutput{}, err
	}
	return nil, ReleaseOutput{GrantID: in.GrantID, Outcome: "released"}, nil
}

func (t *tools) check(ctx context.Context, _ *mcp.CallToolRequest, in CheckInput) (*mcp.CallToolResult, CheckOutput, error) {
	var r broker.CheckResult
	if err := t.client.Call(ctx, broker.APICheck, broker.CheckInput{Permission: in.Permission}, &r); err != nil {
		return nil, CheckOutput{}, err
	}
	out := CheckOutput{Permission: in.Permission, Allowed: r.Allowed, Reason: r.Reason, Base: r.Base, GrantID: r.GrantID}
	if r.ExpiresAt != nil {
		out.ExpiresAt = *r.ExpiresAt
	}
	return nil, out, nil
}

func (t *tools) list(ctx context.Context, _ *mcp.CallToolRequest, _ ListInput) (*mcp.CallToolResult, ListOutput, error) {
	grants, err := t.grants(ctx)
	if err != nil {
		return nil, ListOutput{}, err
	}
	out := ListOutput{Agent: t.agent, Grants: []GrantItem{}}
	for _, g := range grants {
		out.Grants = append(out.Grants, GrantItem{GrantID: g.GrantID, Permissions: g.Permissions, ExpiresAt: g.ExpiresAt, Reason: g.Reason})
	}
	return nil, out, nil
}

// grants are the agent's live grants (jitapi.grants).
func (t *tools) grants(ctx context.Context) ([]events.Grant, error) {
	var l broker.GrantsList
	if err := t.client.Call(ctx, broker.APIGrants, broker.GrantsInput{}, &l); err != nil {
		return nil, err
	}
	return l.Grants, nil
}
