package auth

import (
	"strings"
	"testing"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/jwt/v2"
	"github.com/stretchr/testify/require"
)

// TestClientImports: each client principal's account imports only its own
// part; an agent's subjects all name the agent itself.
func TestClientImports(t *testing.T) {
	subjects := func(p Principal, sc Scope) []string {
		var out []string
		for _, im := range ClientImports(p, "JIT", sc) {
			s := string(im.Subject)
			if im.LocalSubject != "" {
				s = string(im.LocalSubject)
			}
			out = append(out, s)
		}
		return out
	}

	agent := subjects(Principal{Kind: KindAgent, ID: "market-intel"}, Scope{})
	require.True(t, contains(agent, broker.APIRequest))
	require.True(t, contains(agent, broker.APIDone))
	for _, s := range agent {
		if strings.HasPrefix(s, broker.LivePrefix) || strings.HasPrefix(s, JSPrefix) {
			require.Contains(t, s, ".market-intel", "an agent reads only its own events and grants: %s", s)
		}
		require.NotContains(t, []string{broker.APIApprove, broker.APIDeny, broker.APIReinstate, broker.APIRevoke, broker.APIConfigApply, broker.APIPending}, s)
		require.False(t, strings.HasPrefix(s, "$KV."), "no raw bucket writes: %s", s)
		require.NotContains(t, s, "CONSUMER.CREATE")
	}

	guard := subjects(Principal{Kind: KindGuardrail, ID: "pricing-guard"}, Scope{Agents: []string{"a1", "a2"}})
	require.ElementsMatch(t, []string{"guardrail.fired.a1", "guardrail.fired.a2"}, guard, "a guardrail source may fire only against its agents")
	require.Equal(t, []string{"guardrail.fired.*"}, subjects(Principal{Kind: KindGuardrail, ID: "g"}, Scope{}))

	for _, s := range subjects(DefaultChecker, Scope{}) {
		require.False(t, strings.HasPrefix(s, "jitapi."), "a checker calls no API: %s", s)
		require.NotContains(t, s, "KV_jit_pending")
		require.NotContains(t, s, "JIT_AUDIT")
	}
	for _, s := range subjects(DefaultSIEM, Scope{}) {
		require.False(t, strings.HasPrefix(s, "jitapi."), "a SIEM reader calls no API: %s", s)
		require.NotContains(t, s, "KV_")
	}
	for _, p := range []Principal{DefaultOperator, DefaultSIEM, DefaultChecker, {Kind: KindAgent, ID: "a"}} {
		for _, s := range subjects(p, Scope{}) {
			require.NotContains(t, s, "KV_jit_secrets", p.String())
			require.NotContains(t, s, "KV_jit_leases", p.String())
			require.NotContains(t, s, ".DELETE.", p.String())
			require.NotContains(t, s, ".PURGE.", p.String())
			require.NotContains(t, s, ".UPDATE.", p.String())
		}
	}
}

// TestServicePermissions: only approval writes grant keys, only the revoker
// writes suspensions, no service may delete the services' durables, and
// each service publishes only its own event types.
func TestServicePermissions(t *testing.T) {
	perms := func(name string) jwt.Permissions {
		p, ok := ServicePermissions(name)
		require.True(t, ok, name)
		return p
	}
	grants, suspensions, secrets := "$KV."+broker.BucketGrants+".>", "$KV."+broker.BucketSuspensions+".>", "$KV."+broker.BucketSecrets+".>"
	for name, may := range map[string][]string{
		ServiceRequester: {},
		ServicePolicy:    {secrets},
		ServiceApproval:  {grants},
		ServiceRevoker:   {grants, suspensions},
		ServiceAuditor:   {},
	} {
		p := perms(name)
		for _, w := range []string{grants, suspensions, secrets} {
			require.Equal(t, contains(may, w), p.Pub.Allow.Contains(w), "%s writes %s", name, w)
		}
		for _, d := range Durables[broker.AuditStream] {
			if name == ServiceAuditor && d == "auditor" {
				continue
			}
			require.True(t, p.Pub.Deny.Contains("$JS.API.CONSUMER.DELETE."+broker.AuditStream+"."+d), "%s may not delete %s", name, d)
		}
		for _, s := range p.Pub.Allow {
			require.NotContains(t, s, ".STREAM.DELETE.", name)
			require.NotContains(t, s, ".STREAM.PURGE.", name)
		}
	}
	require.True(t, contains(perms(ServiceRevoker).Pub.Allow, "jit.revoked.*"))
	require.False(t, contains(perms(ServiceRequester).Pub.Allow, "jit.granted.*"))
	require.False(t, contains(perms(ServiceApproval).Pub.Allow, "jit.revoked.*"))
	require.True(t, contains(perms(ServiceApproval).Pub.Allow, SRVStatsRevoker), "the console asks the revokers for failing revocations")
	require.False(t, contains(perms(ServiceRequester).Pub.Allow, SRVStatsRevoker))
	_, ok := ServicePermissions("nobody")
	require.False(t, ok)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestServicesDoNotReshapeTheTopology: only jitd updates streams; a
// service creates, resets and never deletes only its own durables.
func TestServicesDoNotReshapeTheTopology(t *testing.T) {
	for _, name := range []string{ServiceRequester, ServicePolicy, ServiceApproval, ServiceRevoker, ServiceAuditor} {
		p, ok := ServicePermissions(name)
		require.True(t, ok)
		for _, s := range p.Pub.Allow {
			require.NotContains(t, s, ".STREAM.UPDATE.", "%s may not update a stream", name)
		}
	}
	j, _ := ServicePermissions(ServiceJitd)
	require.True(t, contains(j.Pub.Allow, "$JS.API.STREAM.UPDATE."+broker.AuditStream), "jitd brings the topology up to date")

	a, _ := ServicePermissions(ServiceApproval)
	require.True(t, contains(a.Pub.Allow, "$JS.API.CONSUMER.RESET.KV_"+broker.BucketPending+".approval-timeouts"))
	require.True(t, contains(a.Pub.Allow, "$JS.API.CONSUMER.RESET."+broker.AuditStream+".approval"))
	require.False(t, contains(a.Pub.Allow, "$JS.API.CONSUMER.RESET.KV_"+broker.BucketGrants+".revoker-expiry"))
	for _, deny := range []string{
		"$JS.API.CONSUMER.CREATE." + broker.AuditStream + ".revoker-guardrail",
		"$JS.API.CONSUMER.CREATE." + broker.AuditStream + ".revoker-guardrail.>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + broker.AuditStream + ".policy",
		"$JS.API.CONSUMER.DELETE." + broker.AuditStream + ".approval",
	} {
		require.True(t, contains(a.Pub.Deny, deny), deny)
	}
	require.False(t, contains(a.Pub.Deny, "$JS.API.CONSUMER.CREATE."+broker.AuditStream+".approval-withdrawals"), "its own")
}
