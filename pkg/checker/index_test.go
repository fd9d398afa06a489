package checker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/stretchr/testify/require"
)

// Several grants of one permission: the answer follows the one that lasts
// longest, falls back to the next when that one is revoked, and stops
// exactly at the latest expires_at among those left.
func TestOverlappingGrantsOfOnePermission(t *testing.T) {
	f := setup(t)
	base := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	short, mid, long := base, base.Add(10*time.Minute), base.Add(20*time.Minute)
	f.putGrant(t, grant("grt_short", agent, short, "data:write"))
	f.putGrant(t, grant("grt_long", agent, long, "data:write", "integrations:write"))
	f.putGrant(t, grant("grt_mid", agent, mid, "data:write"))
	eventually(t, func() bool { return len(f.chk.Grants(agent)) == 3 }, "three grants seen")
	require.Equal(t, "grt_long", f.chk.Check(agent, "data:write").GrantID, "the longest-lasting grant answers")

	// Revoke the longest: the next one takes over, for its own lifetime only.
	require.NoError(t, f.env.Buckets.Grants.Delete(f.ctx, broker.GrantKey(agent, "grt_long")))
	eventually(t, func() bool { return f.chk.Check(agent, "data:write").GrantID == "grt_mid" }, "falls back to grt_mid")
	require.False(t, f.chk.Allowed(agent, "integrations:write"), "only the revoked grant had integrations:write")

	f.clock.Set(mid.Add(-time.Nanosecond))
	require.True(t, f.chk.Allowed(agent, "data:write"))
	f.clock.Set(mid)
	require.False(t, f.chk.Allowed(agent, "data:write"), "no grant left lasts past grt_mid's expires_at")
	f.clock.Set(short.Add(-time.Nanosecond))
	require.True(t, f.chk.Allowed(agent, "data:write"))
}

// BenchmarkAllowedManyGrants is Allowed for an agent holding 1,000 live
// grants of different permissions (the lookup must not scan them).
func BenchmarkAllowedManyGrants(b *testing.B) {
	f := setup(b)
	exp := time.Now().Add(time.Hour)
	for i := range 999 {
		f.putGrant(b, grant(fmt.Sprintf("grt_%d", i), agent, exp, fmt.Sprintf("other:p%d", i)))
	}
	f.putGrant(b, grant("grt_w", agent, exp, "data:write"))
	eventually(b, func() bool { return len(f.chk.Grants(agent)) == 1000 }, "grants seen")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !f.chk.Allowed(agent, "data:write") {
			b.Fatal("refused")
		}
	}
}
