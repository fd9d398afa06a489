package events_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// TestEventsDocumented keeps docs/events.md true to the code: every event
// type and every JSON field of every payload must be documented there.
func TestEventsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/events.md")
	require.NoError(t, err)
	doc := string(b)
	for _, typ := range events.AllTypes {
		require.Contains(t, doc, "### "+typ+" ", "event type %s is not documented", typ)
	}
	for _, code := range events.AllCodes {
		require.Contains(t, doc, "`"+code+"`", "rejection code %s is not in docs/events.md", code)
	}
	for _, v := range []any{events.Request{}, events.Decision{}, events.Grant{}, events.Revocation{},
		events.GuardrailFired{}, events.Suspension{}, events.Reinstatement{}, events.Rejection{},
		events.ConfigApplied{}, events.Actor{}, events.RiskPart{}, events.Approval{}, events.Notification{},
		events.Withdrawal{}, events.Checkpoint{}, events.SeqRange{}} {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			require.Contains(t, doc, "`"+tag+"`", "%s.%s (json %q) is not in docs/events.md", rt.Name(), rt.Field(i).Name, tag)
		}
	}
}
