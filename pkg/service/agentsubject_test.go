package service

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
)

// TestAgentSubjects: an endpoint agents may call is also served on the
// per-agent subject (where an agent account's import delivers its calls),
// whose caller is the agent the subject names, and only for a call that
// crossed an import (the server's request info present); the shared
// subject keeps its identity rules. The refusal is audited.
func TestAgentSubjects(t *testing.T) {
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "requester")
	api, err := NewAPI(t.Context(), Deps{NC: env.NC, JS: env.JS, Buckets: env.Buckets, Log: env.Log}, APIConfig{Name: "jit-probe", Publisher: pub})
	require.NoError(t, err)
	t.Cleanup(api.Close)
	type who struct {
		Internal bool   `json:"internal"`
		Kind     string `json:"kind"`
		ID       string `json:"id"`
		Account  string `json:"account"`
	}
	require.NoError(t, Serve(api, Endpoint[broker.GrantsInput]{
		Name: "grants", Subject: broker.APIGrants, Stage: events.StageRequest, Kinds: []string{auth.KindAgent}, EmptyBody: true,
		Handle: func(_ context.Context, c Call, _ broker.GrantsInput) (any, error) {
			return who{c.Caller.Internal, c.Caller.Principal.Kind, c.Caller.Principal.ID, c.Caller.Account}, nil
		},
	}))
	// An operator-only endpoint gets no per-agent subject.
	require.NoError(t, Serve(api, Endpoint[broker.GrantsInput]{
		Name: "pending", Subject: broker.APIPending, Stage: events.StageApproval, Kinds: []string{auth.KindOperator}, EmptyBody: true,
		Handle: func(context.Context, Call, broker.GrantsInput) (any, error) { return nil, nil },
	}))

	call := func(subject, info string) (who, error) {
		m := nats.NewMsg(subject)
		if info != "" {
			m.Header.Set(auth.HeaderRequestInfo, info)
		}
		m.Data = []byte(`{}`)
		resp, err := env.NC.RequestMsg(m, 5*time.Second)
		if err != nil {
			return who{}, err
		}
		if code := resp.Header.Get(micro.ErrorCodeHeader); code != "" {
			var ae broker.APIError
			require.NoError(t, json.Unmarshal(resp.Data, &ae))
			return who{}, &ae
		}
		var w who
		return w, json.Unmarshal(resp.Data, &w)
	}

	w, err := call(broker.AgentSubject("market-intel", broker.APIGrants), `{"acc":"ABCD","rtt":1000}`)
	require.NoError(t, err)
	require.Equal(t, who{Kind: auth.KindAgent, ID: "market-intel", Account: "ABCD"}, w, "the subject names the agent")

	w, err = call(broker.APIGrants, "")
	require.NoError(t, err)
	require.True(t, w.Internal, "the shared subject without request info is an internal call")

	seq := lastSeq(t, env)
	_, err = call(broker.AgentSubject("market-intel", broker.APIGrants), "")
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae, "published inside the services' account, not through an import")
	require.Equal(t, 401, ae.Status)
	rej := env.AuditEvents(t, "jit.rejected.>")
	require.NotEmpty(t, rej)
	last := rej[len(rej)-1]
	require.Greater(t, last.Sequence, seq, "the refusal is audited")

	_, err = call(broker.AgentSubject("market-intel", broker.APIPending), `{"acc":"ABCD"}`)
	require.ErrorIs(t, err, nats.ErrNoResponders, "no per-agent subject for an endpoint agents may not call")
}

func lastSeq(t *testing.T, env *natstest.Env) uint64 {
	t.Helper()
	s, err := env.JS.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.LastSeq
}
