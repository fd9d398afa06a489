package events_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

func TestNewEncodeDecodeRoundTrip(t *testing.T) {
	g := events.Grant{GrantID: "grt_1", RequestID: "req_1", Agent: "market-intel", Permissions: []string{"data:write"},
		Reason: "clean up orphaned SKUs", GrantedAt: time.Unix(100, 0).UTC(), ExpiresAt: time.Unix(160, 0).UTC(), Status: events.GrantActive}
	e, err := events.New("grt_1/granted", events.TypeGranted, "approval", g.Agent, g,
		events.WithRequestID("req_1"), events.WithGrantID("grt_1"))
	require.NoError(t, err)
	b, err := events.Encode(e)
	require.NoError(t, err)

	got, err := events.Decode(b)
	require.NoError(t, err)
	require.Equal(t, "grt_1/granted", got.ID())
	require.Equal(t, events.TypeGranted, got.Type())
	require.Equal(t, "/jit/approval", got.Source())
	require.Equal(t, "market-intel", got.Subject())
	require.Equal(t, "req_1", events.RequestID(got))
	require.Equal(t, "grt_1", events.GrantID(got))
	back, err := events.DataAs[events.Grant](got)
	require.NoError(t, err)
	require.Equal(t, g, back)
}

func TestDecodeRejects(t *testing.T) {
	valid, err := events.New("x", events.TypeGuardrailFired, "t", "a", events.GuardrailFired{Agent: "a", Rule: "r"})
	require.NoError(t, err)
	b, _ := events.Encode(valid)
	unknown := strings.Replace(string(b), `"guardrail.fired"`, `"evil.type"`, 1)
	noID := strings.Replace(string(b), `"id":"x"`, `"id":""`, 1)
	for name, tc := range map[string]struct {
		in   string
		want error
	}{
		"not json":     {"hello", events.ErrMalformed},
		"empty":        {"", events.ErrMalformed},
		"json array":   {"[1,2]", events.ErrMalformed},
		"missing id":   {noID, events.ErrMalformed},
		"unknown type": {unknown, events.ErrUnknownType},
		"too large":    {`{"x":"` + strings.Repeat("a", events.MaxEventSize) + `"}`, events.ErrTooLarge},
		"bad version":  {`{"specversion":"9.9","id":"1","type":"jit.granted","source":"/x"}`, events.ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := events.Decode([]byte(tc.in))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestDecodeBinary(t *testing.T) {
	h := map[string][]string{
		"ce-specversion": {"1.0"}, "ce-id": {"g1"}, "ce-type": {"guardrail.fired"},
		"ce-source": {"/guardrails/prices"}, "ce-subject": {"svc-price-optimizer"},
		"ce-time": {"2026-11-27T10:00:00Z"}, "ce-requestid": {"req_9"}, "content-type": {"application/json"},
	}
	e, err := events.DecodeBinary(h, []byte(`{"agent":"svc-price-optimizer","rule":"price-floor","fired_at":"2026-11-27T10:00:00Z"}`))
	require.NoError(t, err)
	require.Equal(t, "req_9", events.RequestID(e))
	g, err := events.DataAs[events.GuardrailFired](e)
	require.NoError(t, err)
	require.NoError(t, g.Validate())

	h["ce-time"] = []string{"yesterday"}
	_, err = events.DecodeBinary(h, nil)
	require.ErrorIs(t, err, events.ErrMalformed)
}

func TestDataAsRefusesUnknownFields(t *testing.T) {
	e, err := events.New("x", events.TypeGuardrailFired, "t", "a", map[string]any{"agent": "a", "rule": "r", "sneaky": true})
	require.NoError(t, err)
	_, err = events.DataAs[events.GuardrailFired](e)
	require.ErrorIs(t, err, events.ErrInvalid)
}

func TestSubjectNeverCarriesWildcards(t *testing.T) {
	require.Equal(t, "jit.granted.market-intel", events.Subject(events.TypeGranted, "market-intel"))
	for _, bad := range []string{"", "a.b", "*", ">", "a b", "-x", strings.Repeat("a", 65)} {
		require.Equal(t, "jit.granted."+events.UnknownAgent, events.Subject(events.TypeGranted, bad), bad)
	}
}

func TestIDs(t *testing.T) {
	id := events.NewID("req")
	require.True(t, events.ValidID(id), id)
	require.Len(t, id, 30)
	require.NotEqual(t, id, events.NewID("req"))
	require.Equal(t, "grt"+id[3:], events.GrantIDFor(id))
}

func TestGrantActiveAt(t *testing.T) {
	exp := time.Unix(1000, 0)
	g := events.Grant{ExpiresAt: exp, Status: events.GrantActive, Permissions: []string{"data:write"}}
	require.True(t, g.ActiveAt(exp.Add(-time.Nanosecond)))
	require.False(t, g.ActiveAt(exp), "a grant never counts at or after expires_at")
	g.Status = events.GrantRevoked
	require.False(t, g.ActiveAt(exp.Add(-time.Hour)))
	require.True(t, g.Has("data:write"))
	require.False(t, g.Has("data:read"))
}

func FuzzDecode(f *testing.F) {
	e, _ := events.New("x", events.TypeRequested, "t", "a", events.Request{RequestID: "req_1", Agent: "a"})
	b, _ := json.Marshal(e)
	f.Add(b)
	f.Add([]byte(`{"specversion":"1.0"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := events.Decode(in)
		if err != nil {
			return
		}
		// Whatever decodes must validate and re-encode.
		require.NoError(t, e.Validate())
		_, err = events.Encode(e)
		require.NoError(t, err)
		_, _ = events.DataAs[events.Request](e)
		_, _ = events.DataAs[events.GuardrailFired](e)
	})
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Minute:                   "10m",
		time.Hour:                          "1h",
		90 * time.Minute:                   "1h30m",
		90 * time.Second:                   "1m30s",
		45 * time.Second:                   "45s",
		time.Hour + 5*time.Second:          "1h0m5s",
		1500 * time.Millisecond:            "1.5s",
		0:                                  "0s",
		24*time.Hour + 15*time.Minute:      "24h15m",
		2*time.Hour + 500*time.Millisecond: "2h0m0.5s",
	} {
		require.Equal(t, want, events.ShortDuration(d), d.String())
	}
}
