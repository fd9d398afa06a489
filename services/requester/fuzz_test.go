package requester

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/stretchr/testify/require"
)

// FuzzCheck feeds arbitrary API bodies through the decoder and every pure
// check. It must never panic, every refusal must be a 4xx *broker.APIError
// with a message, and whatever passes must respect every limit. The seed
// corpus is in testdata/fuzz/FuzzCheck; `go test` runs it, `go test
// -fuzz=FuzzCheck` explores from it.
func FuzzCheck(f *testing.F) {
	cfg, err := config.LoadFile("../../examples/jit.yaml")
	require.NoError(f, err)
	f.Add([]byte(`{"agent":"market-intel","permissions":["data:write"],"duration":"30m","reason":"r"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var in broker.RequestInput
		err := broker.DecodeInput(body, &in)
		if err == nil {
			err = checkShape(in)
		}
		var agent *config.Agent
		if err == nil {
			// An internal caller names its agent in the body.
			var name string
			if name, err = (service.Call{Caller: auth.Caller{Internal: true}}).Agent(in.Agent); err == nil {
				agent, err = checkAgent(cfg, events.Actor{Kind: events.ActorAgent, ID: name})
			}
		}
		var dur time.Duration
		if err == nil {
			dur, err = checkRequest(agent, in)
		}
		if err != nil {
			var ae *broker.APIError
			require.True(t, errors.As(err, &ae), "refusal is an API error: %v", err)
			require.GreaterOrEqual(t, ae.Status, 400)
			require.Less(t, ae.Status, 500)
			require.NotEmpty(t, ae.Code)
			require.NotEmpty(t, ae.Message)
			return
		}
		require.LessOrEqual(t, len(body), broker.MaxAPIBody)
		require.True(t, in.RequestID == "" || events.ValidID(in.RequestID))
		require.Equal(t, in.Agent, agent.ID)
		require.NotEmpty(t, strings.TrimSpace(in.Reason))
		require.LessOrEqual(t, utf8.RuneCountInString(in.Reason), MaxReasonLen)
		require.NotEmpty(t, in.Permissions)
		for i, p := range in.Permissions {
			require.True(t, agent.IsEligible(p))
			require.False(t, slices.Contains(in.Permissions[:i], p))
		}
		require.GreaterOrEqual(t, dur, MinDuration)
		require.LessOrEqual(t, dur, agent.MaxJitDuration.D())
		require.LessOrEqual(t, len(in.Context), MaxContextEntries)
	})
}
