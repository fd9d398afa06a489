package tracing_test

import (
	"context"
	"testing"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/tracing"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func event(t *testing.T) events.Event {
	e, err := events.New("req_abc", events.TypeRequested, "requester", "a1", events.Request{RequestID: "req_abc", Agent: "a1"}, events.WithRequestID("req_abc"))
	require.NoError(t, err)
	return e
}

// TestOffByDefault: without Use (or Setup with an endpoint) no span is made
// and no event carries a traceparent.
func TestOffByDefault(t *testing.T) {
	tracing.Use(nil)
	e := event(t)
	tracing.StartPublish(context.Background(), "requester", "jit.requested.a1", &e)(nil)
	_, ok := e.Extensions()[tracing.ExtTraceParent]
	require.False(t, ok)
	require.False(t, tracing.Enabled())
}

// TestEventCarriesTheContext: a publish puts its span's context on the
// event; a handler of that event is its child; a publish with no span in
// its context descends from the request's derived parent.
func TestEventCarriesTheContext(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Use(tp)
	t.Cleanup(func() { tracing.Use(nil) })

	e := event(t)
	tracing.StartPublish(context.Background(), "requester", "jit.requested.a1", &e)(nil)
	tp1, ok := e.Extensions()[tracing.ExtTraceParent].(string)
	require.True(t, ok)
	require.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, tp1)

	// Through the wire form and back.
	b, err := e.MarshalJSON()
	require.NoError(t, err)
	got, err := events.Decode(b)
	require.NoError(t, err)
	ctx, end := tracing.StartHandle(context.Background(), "policy", "jit.requested.a1", got)
	end(nil)
	require.Equal(t, tracing.RequestParent("req_abc").TraceID(), trace.SpanContextFromContext(ctx).TraceID())

	spans := exp.GetSpans()
	require.Len(t, spans, 2)
	pub, handle := spans[0], spans[1]
	require.Equal(t, tracing.RequestParent("req_abc").SpanID(), pub.Parent.SpanID(), "a first write descends from the request's parent")
	require.Equal(t, pub.SpanContext.SpanID(), handle.Parent.SpanID(), "the handler is the write's child")
	require.Equal(t, trace.SpanKindProducer, pub.SpanKind)
	require.Equal(t, trace.SpanKindConsumer, handle.SpanKind)
}

// TestOtherTraceLinksToTheRequest: a request's event written while
// handling another trace (a guardrail's) stays in that trace and links to
// the request's.
func TestOtherTraceLinksToTheRequest(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Use(tp)
	t.Cleanup(func() { tracing.Use(nil) })

	guard, err := events.New("gf-1", events.TypeGuardrailFired, "revoker", "a1", events.GuardrailFired{Agent: "a1", Rule: "r"})
	require.NoError(t, err)
	ctx, end := tracing.StartHandle(context.Background(), "revoker-guardrail", "guardrail.fired.a1", guard)
	e := event(t)
	tracing.StartPublish(ctx, "revoker", "jit.revoked.a1", &e)(nil)
	end(nil)

	spans := exp.GetSpans()
	require.Len(t, spans, 2)
	pub := spans[0]
	require.Equal(t, trace.SpanContextFromContext(ctx).TraceID(), pub.SpanContext.TraceID(), "stays in the guardrail's trace")
	require.Len(t, pub.Links, 1)
	require.Equal(t, tracing.RequestParent("req_abc").TraceID(), pub.Links[0].SpanContext.TraceID(), "linked to the request's trace")
}

// TestCallsAndWrites: a call naming a request is in the request's trace; a
// bucket write is a child of the span in its context, or of the request it
// names, and a write with neither makes no span.
func TestCallsAndWrites(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Use(tp)
	t.Cleanup(func() { tracing.Use(nil) })
	req := tracing.RequestParent("req_abc")

	ctx, end := tracing.StartCall(context.Background(), "requester", "jitapi.request", "req_abc")
	tracing.StartWrite(ctx, "jit_pending", "create", "a1.req_abc", "")(nil)
	end(nil)
	tracing.StartWrite(context.Background(), "jit_leases", "update", "a1.grt_abc", "req_abc")(nil)
	tracing.StartWrite(context.Background(), "jit_config", "put", "active", "")(nil)

	spans := exp.GetSpans()
	require.Len(t, spans, 3, "the configuration write, with no span and no request, makes none")
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		require.Equal(t, req.TraceID(), s.SpanContext.TraceID(), s.Name)
		byName[s.Name] = s
	}
	call := byName["call jitapi.request"]
	require.Equal(t, req.SpanID(), call.Parent.SpanID())
	require.Equal(t, call.SpanContext.SpanID(), byName["kv create jit_pending"].Parent.SpanID())
	require.Equal(t, req.SpanID(), byName["kv update jit_leases"].Parent.SpanID())
}
