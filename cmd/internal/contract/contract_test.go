package contract_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/contract"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/policy"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const apiDir = "../../../api"

func load(t *testing.T) *contract.Contract {
	c, err := contract.Load(filepath.Join(apiDir, "schemas"))
	require.NoError(t, err)
	return c
}

// normal turns a decoded YAML or JSON value into what encoding/json makes
// of it, so that the two compare.
func normal(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

func asyncAPI(t *testing.T) map[string]any {
	b, err := os.ReadFile(filepath.Join(apiDir, "asyncapi.yaml"))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(b, &doc))
	require.Equal(t, "3.0.0", doc["asyncapi"])
	return doc
}

// TestContractSchemasMatchFiles: api/asyncapi.yaml's components.schemas and
// the files in api/schemas are the same schemas, one for one.
func TestContractSchemasMatchFiles(t *testing.T) {
	inYAML := asyncAPI(t)["components"].(map[string]any)["schemas"].(map[string]any)
	files, err := filepath.Glob(filepath.Join(apiDir, "schemas", "*.json"))
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		names = append(names, name)
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var fromFile any
		require.NoError(t, json.Unmarshal(b, &fromFile))
		require.Contains(t, inYAML, name, "api/schemas/%s.json is not in api/asyncapi.yaml", name)
		require.Equal(t, fromFile, normal(t, inYAML[name]), "api/schemas/%s.json differs from components.schemas.%s", name, name)
	}
	for name := range inYAML {
		require.Contains(t, names, name, "components.schemas.%s has no file in api/schemas", name)
	}
	require.ElementsMatch(t, names, load(t).Names(), "every file compiles")
}

// TestEveryEventTypeHasASchema: every type in pkg/events has a data schema,
// a channel and a message in the AsyncAPI document, and a line in
// x-jit-publishers; every jitapi subject the services serve has request
// and reply schemas and a channel.
func TestEveryEventTypeHasASchema(t *testing.T) {
	doc := asyncAPI(t)
	channels := doc["channels"].(map[string]any)
	publishers := doc["x-jit-publishers"].(map[string]any)["channels"].(map[string]any)
	schemas := load(t).Names()
	for _, typ := range events.AllTypes {
		name, ok := contract.EventSchemas[typ]
		require.True(t, ok, "%s has no schema", typ)
		require.Contains(t, schemas, name)
		require.Contains(t, channels, typ)
		require.Contains(t, publishers, typ)
		addr := channels[typ].(map[string]any)["address"].(string)
		require.True(t, strings.HasPrefix(addr, typ+"."), addr)
	}
	require.Len(t, contract.EventSchemas, len(events.AllTypes))
	subjects := []string{broker.APIRequest, broker.APIPending, broker.APIApprove, broker.APIDeny, broker.APIDone,
		broker.APIReinstate, broker.APIRevoke, broker.APIWithdraw, policy.APIConfigApply}
	require.Len(t, contract.Endpoints, len(subjects))
	for _, s := range subjects {
		ep, ok := contract.Endpoints[s]
		require.True(t, ok, s)
		require.Contains(t, schemas, ep.Request)
		require.Contains(t, schemas, ep.Reply)
		require.Contains(t, channels, s)
		require.Contains(t, publishers, s)
	}
	for name := range channels {
		if name != "inbox" {
			require.Contains(t, publishers, name, "x-jit-publishers names who may publish on %s", name)
		}
	}
}

// TestSchemasMatchGoTypes: a schema's properties are exactly the JSON
// fields of its Go type, and its required ones those without omitempty.
func TestSchemasMatchGoTypes(t *testing.T) {
	for name, v := range map[string]any{
		"request": events.Request{}, "decision": events.Decision{}, "grant": events.Grant{}, "revocation": events.Revocation{},
		"guardrail-fired": events.GuardrailFired{}, "suspension": events.Suspension{}, "reinstatement": events.Reinstatement{},
		"rejection": events.Rejection{}, "config-applied": events.ConfigApplied{}, "approval": events.Approval{},
		"notification": events.Notification{}, "withdrawal": events.Withdrawal{}, "checkpoint": events.Checkpoint{},
		"api-request-input": broker.RequestInput{}, "api-request-accepted": broker.RequestAccepted{},
		"api-withdraw-input": broker.WithdrawInput{}, "api-done-input": broker.DoneInput{}, "api-approve-input": broker.ApproveInput{},
		"api-deny-input": broker.ApproveInput{}, "api-revoke-input": broker.RevokeInput{}, "api-reinstate-input": broker.ReinstateInput{},
		"api-action-result": broker.ActionResult{}, "api-pending-list": broker.PendingList{},
		"api-config-apply-input": policy.ConfigApplyInput{}, "api-config-apply-result": policy.ConfigApplyResult{},
		"api-error": broker.APIError{},
	} {
		b, err := os.ReadFile(filepath.Join(apiDir, "schemas", name+".json"))
		require.NoError(t, err)
		var s struct {
			Properties map[string]any `json:"properties"`
			Required   []string       `json:"required"`
		}
		require.NoError(t, json.Unmarshal(b, &s))
		var props, required []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")
			if tag[0] == "" || tag[0] == "-" {
				continue
			}
			props = append(props, tag[0])
			if !slices.Contains(tag[1:], "omitempty") {
				required = append(required, tag[0])
			}
		}
		var got []string
		for p := range s.Properties {
			got = append(got, p)
		}
		require.ElementsMatch(t, props, got, "%s: properties are not the fields of %s", name, rt)
		switch name {
		case "api-deny-input": // deny needs its comment
			required = append(required, "comment")
		case "api-config-apply-input": // an empty source is named config.yaml
			required = slices.DeleteFunc(required, func(s string) bool { return s == "source" })
		}
		require.ElementsMatch(t, required, s.Required, "%s: required fields of %s", name, rt)
	}
}

// TestValidateCanFail: real encodings pass, and the schemas refuse a
// missing field, an unknown field, a wrong enum, a bad time and an error
// answer in the wrong shape.
func TestValidateCanFail(t *testing.T) {
	c := load(t)
	now := time.Now().UTC()
	g := events.Grant{GrantID: "grt_1", RequestID: "req_1", Agent: "market-intel", Permissions: []string{"data:write"},
		Reason: "r", Mode: events.ModeAutoApprove, ApprovedBy: events.Actor{Kind: events.ActorRule, ID: "x"},
		GrantedAt: now, ExpiresAt: now.Add(time.Minute), Status: events.GrantActive}
	e, err := events.New("grt_1/granted", events.TypeGranted, "approval", "market-intel", g)
	require.NoError(t, err)
	body, err := events.Encode(e)
	require.NoError(t, err)
	require.NoError(t, c.ValidateEvent(nil, body))

	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(body, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	for name, bad := range map[string][]byte{
		"missing expires_at": mutate(func(m map[string]any) { delete(data(m), "expires_at") }),
		"unknown field":      mutate(func(m map[string]any) { data(m)["extra"] = 1 }),
		"wrong mode":         mutate(func(m map[string]any) { data(m)["mode"] = "magic" }),
		"bad time":           mutate(func(m map[string]any) { data(m)["granted_at"] = "yesterday" }),
		"bad agent":          mutate(func(m map[string]any) { data(m)["agent"] = "a b" }),
		"no id":              mutate(func(m map[string]any) { delete(m, "id") }),
	} {
		require.Error(t, c.ValidateEvent(nil, bad), name)
	}
	unknown := mutate(func(m map[string]any) { m["type"] = "jit.unknown" })
	require.Error(t, c.ValidateEvent(nil, unknown))

	require.NoError(t, c.ValidateRequest(broker.APIRequest, []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":"30m","reason":"x"}`)))
	require.Error(t, c.ValidateRequest(broker.APIRequest, []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":1800000,"reason":"x"}`)),
		"a number for duration")
	require.NoError(t, c.ValidateRequest(broker.APIPending, nil))
	require.ErrorIs(t, c.ValidateRequest("jitapi.nothing", nil), contract.ErrNoSchema)
	errHdr := map[string][]string{"Nats-Service-Error-Code": {"409"}}
	require.NoError(t, c.ValidateReply(broker.APIDone, errHdr, []byte(`{"status":409,"code":"conflict","message":"grant grt_1 already ended (completed)"}`)))
	require.Error(t, c.ValidateReply(broker.APIDone, errHdr, []byte(`{"outcome":"revoked"}`)))
	require.NoError(t, c.ValidateReply(broker.APIRequest, nil, []byte(`{"request_id":"req_1","seq":42}`)))
	require.Error(t, c.ValidateReply(broker.APIRequest, nil, []byte(`{"request_id":"req_1","seq":0}`)))
}
