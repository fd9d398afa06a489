package auth

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCallerOf: only a client principal's name, written by the server,
// makes an outside caller; no header is an internal call.
func TestCallerOf(t *testing.T) {
	info := func(v string) map[string][]string { return map[string][]string{HeaderRequestInfo: {v}} }

	c, err := CallerOf(nil)
	require.NoError(t, err)
	require.True(t, c.Internal)
	require.True(t, c.Is(KindAgent, "anyone"), "an internal call acts for whom its body says")

	c, err = CallerOf(info(`{"acc":"ACC","user":"UABC","name_tag":"agent:market-intel"}`))
	require.NoError(t, err)
	require.Equal(t, Principal{Kind: KindAgent, ID: "market-intel"}, c.Principal)
	require.True(t, c.Is(KindAgent, "market-intel"))
	require.False(t, c.Is(KindAgent, "svc-price-optimizer"))
	require.False(t, c.Is(KindOperator, "market-intel"))
	require.Equal(t, "agent:market-intel", c.String())

	for _, bad := range []string{
		`{"acc":"ACC","user":"U","name_tag":"service:approval"}`, // a service's name from outside
		`{"acc":"ACC","user":"U","name_tag":"admin:breakglass"}`,
		`{"acc":"ACC","user":"U","name_tag":"market-intel"}`, // no kind
		`{"acc":"ACC","user":"U","name_tag":"root:x"}`,
		`{"acc":"ACC","user":"U","name_tag":"agent:../x"}`,
		`{"acc":"","user":"U","name_tag":"agent:a"}`,
		`{"acc":"ACC","user":"U"}`,
		`not json`,
	} {
		_, err := CallerOf(info(bad))
		require.ErrorIs(t, err, ErrNoIdentity, bad)
	}
}

// FuzzCallerOf: whatever the header holds, CallerOf never panics, and an
// outside caller it accepts is always a valid client principal.
func FuzzCallerOf(f *testing.F) {
	f.Add(`{"acc":"A","user":"U","name_tag":"agent:a"}`)
	f.Add(`{"acc":"A","name_tag":"service:revoker"}`)
	f.Add(`{"name_tag":null}`)
	f.Fuzz(func(t *testing.T, v string) {
		c, err := CallerOf(map[string][]string{HeaderRequestInfo: {v}})
		if err != nil {
			return
		}
		if c.Internal {
			require.Empty(t, v)
			return
		}
		require.NoError(t, c.Principal.Validate())
		require.True(t, c.Principal.IsClient())
		require.NotEmpty(t, c.Account)
	})
}

// TestAgentCaller: a per-agent subject's caller is the agent it names, and
// only with the server's request info (the call crossed an import).
func TestAgentCaller(t *testing.T) {
	info := func(v string) map[string][]string { return map[string][]string{HeaderRequestInfo: {v}} }
	c, err := AgentCaller("market-intel", info(`{"acc":"ACC","rtt":1000}`))
	require.NoError(t, err)
	require.Equal(t, Caller{Principal: Principal{Kind: KindAgent, ID: "market-intel"}, Account: "ACC"}, c)
	require.False(t, c.Internal)

	for name, h := range map[string]map[string][]string{
		"no request info": nil,
		"empty":           info(""),
		"no account":      info(`{"rtt":1}`),
		"not json":        info("x"),
	} {
		_, err := AgentCaller("market-intel", h)
		require.ErrorIs(t, err, ErrNoIdentity, name)
	}
	_, err = AgentCaller("../x", info(`{"acc":"ACC"}`))
	require.ErrorIs(t, err, ErrNoIdentity, "not an agent id")
}
