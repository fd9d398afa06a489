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
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
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
		broker.APIReinstate, broker.APIRevoke, broker.APIWithdraw, broker.APIEvents, broker.APIGrants, broker.APICheck,
		broker.APIConfigApply}
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
		"api-config-apply-input": broker.ConfigApplyInput{}, "api-config-apply-result": broker.ConfigApplyResult{},
		"api-events-input": broker.EventsInput{}, "api-events-page": broker.EventsPage{},
		"api-grants-input": broker.GrantsInput{}, "api-grants-list": broker.GrantsList{},
		"api-check-input": broker.CheckInput{}, "api-check-result": broker.CheckResult{},
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

	// The agent's own reads: an events page carries stored CloudEvents, a
	// grants list grants, a check its verdict.
	page, err := json.Marshal(broker.EventsPage{Events: []broker.StoredEvent{{Seq: 7, Subject: "jit.granted.market-intel", Event: body}}, NextSeq: 8})
	require.NoError(t, err)
	require.NoError(t, c.ValidateReply(broker.APIEvents, nil, page))
	require.Error(t, c.ValidateReply(broker.APIEvents, nil, []byte(`{"events":[{"seq":7,"subject":"x","event":{"id":"e"}}],"next_seq":8,"more":false}`)),
		"an event that is not a CloudEvent")
	require.NoError(t, c.ValidateRequest(broker.APIEvents, nil))
	require.Error(t, c.ValidateRequest(broker.APIEvents, []byte(`{"from":3}`)), "an unknown field")
	list, err := json.Marshal(broker.GrantsList{Grants: []events.Grant{g}})
	require.NoError(t, err)
	require.NoError(t, c.ValidateReply(broker.APIGrants, nil, list))
	require.Error(t, c.ValidateReply(broker.APIGrants, nil, []byte(`{"grants":null}`)))
	exp := now.Add(time.Minute)
	verdict, err := json.Marshal(broker.CheckResult{Allowed: true, Reason: "granted", GrantID: "grt_1", ExpiresAt: &exp})
	require.NoError(t, err)
	require.NoError(t, c.ValidateReply(broker.APICheck, nil, verdict))
	require.Error(t, c.ValidateReply(broker.APICheck, nil, []byte(`{"allowed":"yes","reason":"x"}`)))
	require.NoError(t, c.ValidateRequest(broker.APICheck, []byte(`{"permission":"data:write"}`)))
	require.Error(t, c.ValidateRequest(broker.APICheck, []byte(`{"permission":"Data Write"}`)), "not area:action")

	// The guardrail ingress answers as JetStream does.
	require.NoError(t, c.Validate(contract.GuardrailAck, []byte(`{"stream":"JIT_AUDIT","seq":13,"duplicate":false}`)))
	require.NoError(t, c.Validate(contract.GuardrailAck, []byte(`{"error":{"code":403,"description":"guardrail source g may not fire r against a"}}`)))
	require.Error(t, c.Validate(contract.GuardrailAck, []byte(`{"stream":"JIT_AUDIT","seq":13}`)))
	require.Error(t, c.Validate(contract.GuardrailAck, []byte(`{"error":{"code":418,"description":"x"}}`)))
}

// TestPublishersAndReadersMatchRights: x-jit-publishers and x-jit-readers
// say exactly what pkg/auth lets each principal do. A principal publishes
// on a channel when its NATS permissions allow the subject (a service) or
// its account imports it as a service (a client principal: the subject in
// its account, or the one the import reaches); it reads a bucket when it
// may direct-get the bucket's stream (the whole stream, or the keys of the
// example), and a feed when it may subscribe to it or its account imports
// it as a stream. The break-glass administrator is left out: it may do
// anything in the services' account.
func TestPublishersAndReadersMatchRights(t *testing.T) {
	doc := asyncAPI(t)
	channels := doc["channels"].(map[string]any)
	listed := func(ext string) map[string][]string {
		out := map[string][]string{}
		for ch, v := range doc[ext].(map[string]any)["channels"].(map[string]any) {
			for _, p := range v.([]any) {
				out[ch] = append(out[ch], p.(string))
			}
		}
		return out
	}
	// One example of each channel's subject, about agent market-intel.
	example := func(ch string) string {
		addr, ok := channels[ch].(map[string]any)["address"].(string)
		require.True(t, ok, "channel %s has an address", ch)
		return strings.NewReplacer("{agent}", agent, "{grant_id}", "grt_1", "{request_id}", "req_1",
			"{subject}", "jit.granted."+agent).Replace(addr)
	}
	// Each principal: what it may publish and subscribe to, and the
	// JetStream API prefix it reads under.
	type who struct {
		name     string
		pub, sub func(subject string) bool
		jsAPI    string
	}
	var principals []who
	for _, name := range auth.Services {
		perms, ok := auth.ServicePermissions(name)
		require.True(t, ok, name)
		allowed := func(allow, deny []string, subject string) bool {
			return slices.ContainsFunc(allow, func(p string) bool { return subjectMatch(p, subject) }) &&
				!slices.ContainsFunc(deny, func(p string) bool { return subjectMatch(p, subject) })
		}
		principals = append(principals, who{name: "service:" + name, jsAPI: "$JS.API",
			pub: func(s string) bool { return allowed(perms.Pub.Allow, perms.Pub.Deny, s) },
			sub: func(s string) bool { return allowed(perms.Sub.Allow, perms.Sub.Deny, s) }})
	}
	for _, kind := range auth.ClientKinds {
		id := kind
		switch kind {
		case auth.KindAgent:
			id = agent
		case auth.KindGuardrail:
			id = "pricing-guard"
		}
		imports := auth.ClientImports(auth.Principal{Kind: kind, ID: id}, "JIT", auth.Scope{})
		has := func(typ, subject string) bool {
			for _, im := range imports {
				if im.Type.String() != typ {
					continue
				}
				local := string(im.Subject)
				if im.LocalSubject != "" {
					local = string(im.LocalSubject)
				}
				if subjectMatch(local, subject) || typ == "service" && subjectMatch(string(im.Subject), subject) {
					return true
				}
			}
			return false
		}
		principals = append(principals, who{name: kind, jsAPI: auth.JSPrefix,
			pub: func(s string) bool { return has("service", s) },
			sub: func(s string) bool { return has("stream", s) }})
	}

	pubs := listed("x-jit-publishers")
	for ch := range channels {
		if ch == "inbox" {
			continue
		}
		subject := example(ch)
		var want, streams []string
		for _, p := range pubs[ch] {
			if s, ok := strings.CutPrefix(p, "stream:"); ok {
				streams = append(streams, s)
				continue
			}
			want = append(want, p)
		}
		var got []string
		for _, p := range principals {
			if p.pub(subject) {
				got = append(got, p.name)
			}
		}
		require.ElementsMatch(t, want, got, "x-jit-publishers of %s (subject %s)", ch, subject)
		for _, s := range streams {
			require.True(t, strings.HasPrefix(ch, broker.LivePrefix) && s == broker.AuditStream ||
				strings.HasPrefix(ch, broker.StatePrefix+".") && s == "KV_"+strings.TrimPrefix(ch, broker.StatePrefix+"."),
				"%s: stream:%s republishes only on its own feed", ch, s)
		}
	}

	reads := listed("x-jit-readers")
	for ch := range channels {
		var got []string
		switch {
		case strings.HasPrefix(ch, "kv."):
			stream := "KV_" + strings.TrimPrefix(ch, "kv.")
			key := example(ch)
			for _, p := range principals {
				if p.pub(p.jsAPI+".DIRECT.GET."+stream) || p.pub(p.jsAPI+".DIRECT.GET."+stream+"."+key) {
					got = append(got, p.name)
				}
			}
		case ch == broker.LivePrefix || strings.HasPrefix(ch, broker.StatePrefix+"."):
			for _, p := range principals {
				if p.sub(example(ch)) {
					got = append(got, p.name)
				}
			}
		default:
			require.NotContains(t, reads, ch, "x-jit-readers covers the buckets and the feeds")
			continue
		}
		require.ElementsMatch(t, reads[ch], got, "x-jit-readers of %s", ch)
	}
}

const agent = "market-intel"

// subjectMatch reports whether NATS subject pattern p (with * and >)
// matches subject s.
func subjectMatch(p, s string) bool {
	pt, st := strings.Split(p, "."), strings.Split(s, ".")
	for i, tok := range pt {
		switch {
		case tok == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case tok != "*" && tok != st[i]:
			return false
		}
	}
	return len(pt) == len(st)
}
