package main

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// A grant whose jit.granted was seen but never stored is not counted as a
// grant whose revocation was lost; one that was stored, and one whose
// jit.revoked came, stay.
func TestDropNotStored(t *testing.T) {
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "approval")
	stored := grant{id: "grt_stored", agent: "exp-001"}
	revoked := grant{id: "grt_revoked", agent: "exp-001"}
	ghost := grant{id: "grt_ghost", agent: "exp-001"}
	other := grant{id: "grt_other", agent: "exp-002"} // an agent with nothing stored
	for _, g := range []grant{stored, revoked} {
		_, _, err := pub.Emit(t.Context(), events.GrantedEventID(g.id), events.TypeGranted, g.agent,
			events.Grant{GrantID: g.id, Agent: g.agent, Permissions: []string{"p"}, ExpiresAt: time.Now().Add(time.Minute)})
		require.NoError(t, err)
	}
	c := &client{js: env.JS}
	grants := []grant{stored, revoked, ghost, other}
	ids, _ := idsAndLastExpiry(grants)
	kept, dropped := c.dropNotStored(t.Context(), grants, ids, map[string]revocation{revoked.id: {}})
	require.Equal(t, []string{stored.id, revoked.id}, kept)
	require.Equal(t, 2, dropped)
}
