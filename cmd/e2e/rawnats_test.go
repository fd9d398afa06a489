package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// cloudEvent is the structured-mode CloudEvent as a client in any language
// reads it: plain JSON, no SDK.
type cloudEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Source    string          `json:"source"`
	Subject   string          `json:"subject"`
	RequestID string          `json:"requestid"`
	Data      json.RawMessage `json:"data"`
}

// TestRawNATSAgent is docs/agents.md's "Any language" section done with
// nothing but nats.go core NATS, the agent's credentials file and
// encoding/json: subscribe to the agent's live events, ask on
// jitapi.request, read the decision and grant CloudEvents; then, with the
// guardrail source's credential, publish a guardrail.fired CloudEvent and
// read the revocation and suspension.
func TestRawNATSAgent(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	const agent = "svc-price-optimizer"
	creds := deploymentOf(t, app.NATSURL()).creds
	nc, err := nats.Connect(app.NATSURL(), nats.UserCredentials(filepath.Join(creds, "agent-"+agent+".creds")))
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	// Subscribe first, so no outcome is missed.
	sub, err := nc.SubscribeSync("jitlive.jit.*." + agent)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	next := func(typ, requestID string) cloudEvent {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			m, err := sub.NextMsg(time.Until(deadline))
			require.NoError(t, err, "waiting for %s", typ)
			require.Equal(t, "application/cloudevents+json", m.Header.Get("Content-Type"))
			var e cloudEvent
			require.NoError(t, json.Unmarshal(m.Data, &e))
			if e.Type == typ && (requestID == "" || e.RequestID == requestID) {
				require.Equal(t, "jitlive."+typ+"."+agent, m.Subject)
				require.NotEmpty(t, m.Header.Get("Nats-Sequence"), "the stream's sequence comes along")
				return e
			}
		}
		t.Fatalf("no %s", typ)
		return cloudEvent{}
	}

	body := `{"agent":"svc-price-optimizer","permissions":["data:write"],"duration":"10m",` +
		`"reason":"reprice winter catalogue","context":{"ticket":"PRC-7"}}`
	resp, err := nc.Request("jitapi.request", []byte(body), 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, resp.Header.Get("Nats-Service-Error-Code"), string(resp.Data))
	var acc struct {
		RequestID string `json:"request_id"`
		Seq       uint64 `json:"seq"`
	}
	require.NoError(t, json.Unmarshal(resp.Data, &acc))
	require.NotEmpty(t, acc.RequestID)
	require.NotZero(t, acc.Seq)

	dec := next("jit.decided", acc.RequestID)
	var d struct {
		Outcome, Mode, Rule, Reason string
	}
	require.NoError(t, json.Unmarshal(dec.Data, &d))
	require.Equal(t, "approved", d.Outcome, d.Reason)
	gr := next("jit.granted", acc.RequestID)
	var g struct {
		GrantID   string    `json:"grant_id"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	require.NoError(t, json.Unmarshal(gr.Data, &g))
	require.NotEmpty(t, g.GrantID)
	require.True(t, g.ExpiresAt.After(time.Now()))

	// A bad request is answered with an error; the reply carries the reason.
	resp, err = nc.Request("jitapi.request", []byte(`{"agent":"svc-price-optimizer","permissions":["data:write"],"duration":"2h","reason":"x"}`), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "403", resp.Header.Get("Nats-Service-Error-Code"))
	require.Contains(t, string(resp.Data), "duration_exceeded")

	// A guardrail in any language: publish a structured CloudEvent.
	fired := fmt.Sprintf(`{"specversion":"1.0","id":"raw-grd-1","source":"/shop/price-guard","type":"guardrail.fired",`+
		`"subject":%q,"datacontenttype":"application/json","data":{"agent":%q,"rule":"price-floor",`+
		`"detail":"SKU 1182 at 0.40","fired_at":%q}}`, agent, agent, time.Now().UTC().Format(time.RFC3339))
	guard, err := nats.Connect(app.NATSURL(), nats.UserCredentials(filepath.Join(creds, "guardrail-pricing-guard.creds")))
	require.NoError(t, err)
	t.Cleanup(guard.Close)
	m := nats.NewMsg("guardrail.fired." + agent)
	m.Header.Set("Content-Type", "application/cloudevents+json")
	m.Header.Set("Nats-Msg-Id", "raw-grd-1")
	m.Data = []byte(fired)
	// The answer is a JetStream acknowledgement: the event is stored.
	ack, err := guard.RequestMsg(m, 5*time.Second)
	require.NoError(t, err)
	require.Contains(t, string(ack.Data), `"stream":"JIT_AUDIT"`)

	rev := next("jit.revoked", acc.RequestID)
	var r struct{ Reason, GrantID string }
	require.NoError(t, json.Unmarshal(rev.Data, &r))
	require.Equal(t, "guardrail", r.Reason)
	susp := next("jit.suspended", "")
	require.Contains(t, string(susp.Data), `"rule":"price-floor"`)
}
