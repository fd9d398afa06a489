package allinone

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/agentjit/jit/pkg/tracing"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestOneTracePerRequest: with tracing on, one auto-approved request is one
// trace: spans from the requester, the policy and the approval services,
// each hop a child of the span that wrote the event it handles (the
// context travels in the events' traceparent), and the revocation at its
// expiry joins the same trace.
func TestOneTracePerRequest(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Use(tp)
	t.Cleanup(func() { tracing.Use(nil); _ = tp.Shutdown(context.Background()) })

	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1"},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	nc, err := nats.Connect(app.NATSURL(), nats.UserCredentials(filepath.Join(app.CredsDir(), auth.Principal{Kind: auth.KindAgent, ID: "market-intel"}.CredsFile())))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	client, err := sdk.New(nc, "market-intel")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := client.Request(ctx, []string{"data:write"}, time.Second, "tracing test", nil)
	require.NoError(t, err)

	// Spans of this request: their event ids carry its id's unique part.
	suffix := strings.TrimPrefix(g.RequestID(), "req_")
	mine := func() tracetest.SpanStubs {
		var out tracetest.SpanStubs
		for _, s := range exp.GetSpans() {
			for _, a := range s.Attributes {
				if (a.Key == "cloudevents.event_id" && strings.Contains(a.Value.AsString(), suffix)) ||
					(a.Key == tracing.RequestIDAttr && a.Value.AsString() == g.RequestID()) {
					out = append(out, s)
					break
				}
			}
		}
		return out
	}
	byName := func(spans tracetest.SpanStubs, name string) *tracetest.SpanStub {
		for i := range spans {
			if spans[i].Name == name {
				return &spans[i]
			}
		}
		return nil
	}
	var spans tracetest.SpanStubs
	require.Eventually(t, func() bool {
		spans = mine()
		return byName(spans, "publish jit.revoked") != nil
	}, 15*time.Second, 20*time.Millisecond, "the revocation at expiry makes a span")

	trace := tracing.RequestParent(g.RequestID()).TraceID()
	services := map[string]bool{}
	for _, s := range spans {
		require.Equal(t, trace, s.SpanContext.TraceID(), "span %q is in the request's trace", s.Name)
		for _, a := range s.Attributes {
			if a.Key == tracing.ServiceAttr {
				services[a.Value.AsString()] = true
			}
		}
	}
	for _, svc := range []string{"requester", "policy", "approval", "revoker"} {
		require.True(t, services[svc], "a span from %s (have %v)", svc, services)
	}
	// Each hop is a child of the write it handles: the context came in the event.
	for _, hop := range []struct{ write, handle string }{
		{"publish jit.requested", "handle jit.requested"},
		{"publish jit.decided", "handle jit.decided"},
	} {
		w, h := byName(spans, hop.write), byName(spans, hop.handle)
		require.NotNil(t, w, hop.write)
		require.NotNil(t, h, hop.handle)
		require.Equal(t, w.SpanContext.SpanID(), h.Parent.SpanID(), "%s is a child of %s", hop.handle, hop.write)
	}
	granted := byName(spans, "publish jit.granted")
	require.NotNil(t, granted)
	decided := byName(spans, "handle jit.decided").SpanContext.SpanID()
	require.Equal(t, decided, granted.Parent.SpanID(), "the grant is written while handling the decision")
	// The API call that asked, and each bucket write, are spans too.
	call := byName(spans, "call jitapi.request")
	require.NotNil(t, call, "the agent's call")
	require.Equal(t, call.SpanContext.SpanID(), byName(spans, "publish jit.requested").Parent.SpanID(), "the request is written in its call")
	for _, w := range []string{"kv create jit_leases", "kv create jit_grants"} {
		s := byName(spans, w)
		require.NotNil(t, s, w)
		require.Equal(t, decided, s.Parent.SpanID(), "%s is written while handling the decision", w)
	}
	var revokerWrites int
	for _, s := range spans {
		if strings.HasPrefix(s.Name, "kv ") && s.Parent.SpanID() != decided {
			revokerWrites++
		}
	}
	require.Positive(t, revokerWrites, "the revocation's writes of the lease and the grant key join the trace")
}
