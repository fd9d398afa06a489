package e2e

import (
	"slices"
	"testing"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// Which events carry the requestid extension (docs/events.md, README).
var (
	alwaysRequestID = []string{events.TypeRequested, events.TypeDecided, events.TypeApproved, events.TypeGranted,
		events.TypeRevoked, events.TypeNotification, events.TypeWithdrawn}
	neverRequestID = []string{events.TypeGuardrailFired, events.TypeSuspended, events.TypeReinstated, events.TypeConfigApplied, events.TypeCheckpoint}
)

// requireRequestIDs checks the audit trail (jitctl audit --json lines)
// against what docs/events.md promises: every event of a request carries
// its id in the requestid extension, equal to the request_id of its data;
// events about an agent or the system carry none; the grantid extension
// equals grant_id wherever the data names a grant.
func requireRequestIDs(t *testing.T, lines []map[string]any) {
	t.Helper()
	require.Equal(t, len(events.AllTypes), len(alwaysRequestID)+len(neverRequestID)+1, "every type is classified (rejected depends on its data)")
	for _, e := range lines {
		typ, _ := e["type"].(string)
		data, _ := e["data"].(map[string]any)
		ext, hasExt := e["requestid"].(string)
		switch {
		case slices.Contains(alwaysRequestID, typ):
			require.NotEmpty(t, ext, "%s %s has no requestid", typ, e["id"])
		case slices.Contains(neverRequestID, typ):
			require.False(t, hasExt, "%s %s carries requestid %q", typ, e["id"], ext)
		}
		if rid, _ := data["request_id"].(string); rid != "" {
			require.Equal(t, rid, ext, "%s %s: requestid extension vs request_id", typ, e["id"])
		} else if typ == events.TypeRejected {
			require.False(t, hasExt, "%s %s: requestid without request_id", typ, e["id"])
		}
		if gid, _ := data["grant_id"].(string); gid != "" {
			require.Equal(t, gid, e["grantid"], "%s %s: grantid extension vs grant_id", typ, e["id"])
		}
	}
}
