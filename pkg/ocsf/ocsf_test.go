package ocsf_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/ocsf"
	"github.com/stretchr/testify/require"
)

var at = time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)

// samples is one event of every type.
func samples(t *testing.T) map[string]events.Event {
	agent := events.Actor{Kind: events.ActorAgent, ID: "market-intel"}
	alice := events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}
	rule := events.Actor{Kind: events.ActorRule, ID: "market-intel-write"}
	req := events.Request{RequestID: "req_1", Agent: "market-intel", Permissions: []string{"data:write"}, DurationMS: 600000,
		Reason: "clean up", RequestedBy: agent, RequestedAt: at}
	data := map[string]any{
		events.TypeRequested: req,
		events.TypeDecided: events.Decision{RequestID: "req_1", Agent: "market-intel", Outcome: events.OutcomeDenied, Mode: events.ModePolicy,
			Reason: "risk 70 above 60", Permissions: []string{"data:write"}, DurationMS: 600000, DecidedBy: rule, DecidedAt: at, Request: req},
		events.TypeApproved: events.Approval{RequestID: "req_1", Agent: "market-intel", Approver: alice, Permissions: []string{"data:write"},
			DurationMS: 600000, Approvals: 1, Required: 2, ApprovedAt: at},
		events.TypeWithdrawn: events.Withdrawal{RequestID: "req_1", Agent: "market-intel", WithdrawnBy: agent, WithdrawnAt: at},
		events.TypeRejected: events.Rejection{Stage: events.StageRequest, Code: events.CodeNotEligible, Message: "data:delete is not eligible",
			Agent: "market-intel", Actor: agent, RejectedAt: at},
		events.TypeGranted: events.Grant{GrantID: "grt_1", RequestID: "req_1", Agent: "market-intel", Permissions: []string{"data:write"},
			Reason: "clean up", Mode: events.ModeAutoApprove, ApprovedBy: rule, GrantedAt: at, ExpiresAt: at.Add(10 * time.Minute), Status: "active"},
		events.TypeRevoked: events.Revocation{GrantID: "grt_1", RequestID: "req_1", Agent: "market-intel", Permissions: []string{"data:write"},
			Reason: events.RevokedCompleted, RevokedBy: agent, RevokedAt: at, GrantedAt: at, ExpiresAt: at.Add(10 * time.Minute)},
		events.TypeGuardrailFired: events.GuardrailFired{Agent: "market-intel", Rule: "price-floor", Detail: "SKU 1182 at 0.40", FiredAt: at},
		events.TypeSuspended: events.Suspension{Agent: "market-intel", Rule: "price-floor", GuardrailID: "grd_1",
			SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, SuspendedAt: at, RevokedGrants: []string{"grt_1"}},
		events.TypeReinstated: events.Reinstatement{Agent: "market-intel", Comment: "fixed", ReinstatedBy: alice, ReinstatedAt: at},
		events.TypeConfigApplied: events.ConfigApplied{Outcome: "applied", Digest: "4be1a0c2d3e4f5a6", Source: "examples/jit.yaml", Revision: 1,
			AppliedBy: events.Actor{Kind: events.ActorSystem, ID: "jitd"}, AppliedAt: at},
		events.TypeNotification: events.Notification{RequestID: "req_1", Agent: "market-intel", Notifier: "slack", NotifierType: "slack",
			Outcome: events.NotificationFailed, Attempts: 5, Error: "503", NotifiedAt: at},
		events.TypeCheckpoint: events.Checkpoint{Stream: "JIT_AUDIT", FirstSeq: 1, LastSeq: 3, Count: 3, KeyID: "9a41c0d2e7b3f851", CoveredUntil: at},
	}
	out := map[string]events.Event{}
	for typ, d := range data {
		e, err := events.New("ev-"+typ, typ, "test", "market-intel", d, events.WithTime(at), events.WithRequestID("req_1"))
		require.NoError(t, err)
		out[typ] = e
	}
	return out
}

func TestEveryTypeIsMapped(t *testing.T) {
	s := samples(t)
	for _, typ := range events.AllTypes {
		_, ok := ocsf.Mappings[typ]
		require.True(t, ok, "%s has no OCSF mapping", typ)
		require.Contains(t, s, typ, "a sample of %s", typ)
	}
	require.Len(t, ocsf.Mappings, len(events.AllTypes))
}

func TestFrom(t *testing.T) {
	s := samples(t)
	stored := at.Add(time.Millisecond)
	for typ, want := range map[string]struct {
		class, activity, status, severity int
	}{
		events.TypeRequested:      {3003, 99, 1, 1},
		events.TypeDecided:        {3003, 1, 2, 1}, // the sample is a denial
		events.TypeApproved:       {3003, 99, 1, 1},
		events.TypeWithdrawn:      {3003, 99, 1, 1},
		events.TypeRejected:       {3003, 99, 2, 2},
		events.TypeGranted:        {3005, 1, 1, 1},
		events.TypeRevoked:        {3005, 2, 1, 1},
		events.TypeGuardrailFired: {2004, 1, 1, 4},
		events.TypeSuspended:      {3001, 5, 1, 3},
		events.TypeReinstated:     {3001, 2, 1, 1},
		events.TypeConfigApplied:  {3004, 3, 1, 1},
		events.TypeNotification:   {0, 99, 2, 1},
		events.TypeCheckpoint:     {0, 99, 1, 1},
	} {
		o, err := ocsf.From(s[typ], 7, stored)
		require.NoError(t, err, typ)
		require.Equal(t, want.class, o.ClassUID, typ)
		require.Equal(t, want.activity, o.ActivityID, typ)
		require.Equal(t, want.class*100+want.activity, o.TypeUID, typ)
		require.Equal(t, want.status, o.StatusID, typ)
		require.Equal(t, want.severity, o.SeverityID, typ)
		require.Equal(t, at.UnixMilli(), o.Time)
		require.Equal(t, stored.UnixMilli(), o.Metadata.LoggedTime)
		require.Equal(t, "ev-"+typ, o.Metadata.UID)
		require.Equal(t, "req_1", o.Metadata.CorrelationUID)
		require.Equal(t, ocsf.Version, o.Metadata.Version)
		require.NotEmpty(t, o.Message, typ)
		b, err := json.Marshal(o)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		for _, k := range []string{"class_uid", "category_uid", "activity_id", "type_uid", "severity_id", "time", "metadata"} {
			require.Contains(t, m, k, "%s: OCSF requires %s", typ, k)
		}
		require.Equal(t, typ, m["unmapped"].(map[string]any)["cloudevent"].(map[string]any)["type"])
	}

	g, err := ocsf.From(s[events.TypeGranted], 0, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []string{"data:write"}, g.Privileges)
	require.Equal(t, "market-intel", g.User.UID)
	require.Equal(t, ocsf.UserTypeOther, g.User.TypeID)
	f, err := ocsf.From(s[events.TypeGuardrailFired], 0, time.Time{})
	require.NoError(t, err)
	require.True(t, f.IsAlert)
	require.Equal(t, "guardrail price-floor", f.FindingInfo.Title)
	a, err := ocsf.From(s[events.TypeApproved], 0, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []ocsf.Group{{Name: "security-admin"}}, a.Actor.User.Groups)
}

// TestMappingDocumented keeps docs/siem.md's table true: the row of every
// event type names its class_uid and activity_id.
func TestMappingDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/siem.md")
	require.NoError(t, err)
	for typ, m := range ocsf.Mappings {
		re := regexp.MustCompile(fmt.Sprintf("(?m)^\\| `%s` \\| [^|]+\\| %d \\| [^|]+\\| %d \\|", regexp.QuoteMeta(typ), m.Class.UID, m.ActivityID))
		require.Regexp(t, re, string(b), "docs/siem.md: the row of %s must give class_uid %d and activity_id %d", typ, m.Class.UID, m.ActivityID)
	}
	require.True(t, strings.Contains(string(b), "OCSF "+ocsf.Version))
}
