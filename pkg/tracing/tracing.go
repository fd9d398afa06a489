// Package tracing carries one OpenTelemetry trace per access request across
// the services, in the events themselves: the CloudEvents distributed-tracing
// extension (`traceparent`, W3C Trace Context) on every event a service
// stores. The broker adapter and the API entry make the spans (a span per
// event written in broker.Publisher, per bucket write in the buckets'
// handles, per handled event in the consume loop, per API call in
// service.Serve), so the services' logic has none of it.
//
// It is off unless Setup found OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, or a test called Use: then no
// span is made and no event carries a traceparent.
//
// A revocation hours later has no event to carry the context of the
// request it ends: a request's spans whose context carries no span are
// made under a parent derived from the request id (RequestParent), so its
// grant's revocation joins the request's trace.
package tracing

import (
	"context"
	"crypto/sha256"
	"os"
	"sync/atomic"

	"github.com/agentjit/jit/pkg/events"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Extension attribute names of the CloudEvents distributed-tracing
// extension.
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

// ServiceAttr names the JIT service that made a span (in jitd every
// service shares one process and one resource).
const ServiceAttr = attribute.Key("jit.service")

type state struct {
	tracer trace.Tracer
}

var current atomic.Pointer[state]

var propagator = propagation.TraceContext{}

// Enabled reports whether spans are made.
func Enabled() bool { return current.Load() != nil }

// Use makes spans with tp from now on (nil turns tracing off). Tests use it
// with an in-memory exporter; Setup calls it.
func Use(tp trace.TracerProvider) {
	if tp == nil {
		current.Store(nil)
		return
	}
	current.Store(&state{tracer: tp.Tracer("github.com/agentjit/jit")})
}

// Setup turns tracing on, exporting over OTLP/HTTP, when the standard
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
// (with the standard OTEL_* options of the exporter); otherwise it does
// nothing. shutdown flushes what is buffered; call it when the process
// stops.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	Use(tp)
	return func(ctx context.Context) error {
		Use(nil)
		return tp.Shutdown(ctx)
	}, nil
}

// RequestParent is the span context every span of request id descends
// from when nothing else is its parent: its trace id and span id are
// derived from the id, so that the same request, seen by any service at
// any time, is one trace. It is a remote parent that is never exported
// itself.
func RequestParent(requestID string) trace.SpanContext {
	h := sha256.Sum256([]byte("jit-request/" + requestID))
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], h[:16])
	copy(sid[:], h[16:24])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// ceCarrier reads and writes an event's tracing extension attributes.
type ceCarrier struct{ e *events.Event }

func (c ceCarrier) Get(key string) string {
	if v, ok := c.e.Extensions()[key].(string); ok {
		return v
	}
	return ""
}

func (c ceCarrier) Set(key, value string) { c.e.SetExtension(key, value) }

func (c ceCarrier) Keys() []string { return []string{ExtTraceParent, ExtTraceState} }

// Extract returns ctx with the span context e carries as its remote
// parent, or ctx as it is if e carries none.
func Extract(ctx context.Context, e events.Event) context.Context {
	if !Enabled() {
		return ctx
	}
	return propagator.Extract(ctx, ceCarrier{&e})
}

// StartPublish starts the span of one broker write of e by service and
// puts its context on e (traceparent). Its parent is ctx's span, or, when
// ctx has none, the request's (RequestParent of e's requestid extension);
// a write of a request's event in another trace links to the request's.
// end ends it with the write's error. Without tracing it does nothing.
func StartPublish(ctx context.Context, service, subject string, e *events.Event) (end func(error)) {
	st := current.Load()
	if st == nil {
		return func(error) {}
	}
	ctx, opts := underRequest(ctx, events.RequestID(*e))
	opts = append(opts, trace.WithSpanKind(trace.SpanKindProducer))
	ctx, span := st.tracer.Start(ctx, "publish "+e.Type(), append(opts,
		trace.WithAttributes(ServiceAttr.String(service), attribute.String("messaging.destination.name", subject),
			attribute.String("cloudevents.event_id", e.ID()), attribute.String("cloudevents.event_type", e.Type())))...)
	propagator.Inject(ctx, ceCarrier{e})
	return ender(span)
}

// underRequest places a span about request requestID (none if empty): under
// ctx's span if it has one, else under the request's (RequestParent); a
// span in another trace than the request's links to it.
func underRequest(ctx context.Context, requestID string) (context.Context, []trace.SpanStartOption) {
	if requestID == "" {
		return ctx, nil
	}
	req := RequestParent(requestID)
	switch parent := trace.SpanContextFromContext(ctx); {
	case !parent.IsValid():
		return trace.ContextWithRemoteSpanContext(ctx, req), nil
	case parent.TraceID() != req.TraceID():
		// Written in another trace (a revocation by a guardrail, an
		// agent's done): linked to the request's.
		return ctx, []trace.SpanStartOption{trace.WithLinks(trace.Link{SpanContext: req})}
	}
	return ctx, nil
}

// ender ends span with an error, if any.
func ender(span trace.Span) func(error) {
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// RequestIDAttr names the request a span of an API call or a bucket write
// is about.
const RequestIDAttr = attribute.Key("jit.request_id")

// StartCall starts the span of one API call (subject) served by service,
// about request requestID if the call names one (a request's id, or the
// request a grant was made for): under the request's trace then, so that
// the events the call writes are in it. Without tracing it returns ctx and
// does nothing.
func StartCall(ctx context.Context, service, subject, requestID string) (context.Context, func(error)) {
	st := current.Load()
	if st == nil {
		return ctx, func(error) {}
	}
	ctx, opts := underRequest(ctx, requestID)
	ctx, span := st.tracer.Start(ctx, "call "+subject, append(opts, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(ServiceAttr.String(service), attribute.String("rpc.method", subject), RequestIDAttr.String(requestID)))...)
	return ctx, ender(span)
}

// StartWrite starts the span of one write (op: create, put, update,
// delete, purge) of key in bucket, a child of ctx's span, or, with none,
// of the request requestID the key belongs to. A write with neither (a
// configuration, a suspension written outside any traced work) makes no
// span. Without tracing it does nothing.
func StartWrite(ctx context.Context, bucket, op, key, requestID string) func(error) {
	st := current.Load()
	if st == nil || (requestID == "" && !trace.SpanContextFromContext(ctx).IsValid()) {
		return func(error) {}
	}
	ctx, opts := underRequest(ctx, requestID)
	_, span := st.tracer.Start(ctx, "kv "+op+" "+bucket, append(opts, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", "nats-kv"), attribute.String("db.collection.name", bucket),
			attribute.String("db.operation.name", op), attribute.String("jit.kv.key", key), RequestIDAttr.String(requestID)))...)
	return ender(span)
}

// StartHandle starts the span of one event handled by consumer durable,
// as a child of the context the event carries. Without tracing it returns
// ctx and does nothing.
func StartHandle(ctx context.Context, durable, subject string, e events.Event) (context.Context, func(error)) {
	st := current.Load()
	if st == nil {
		return ctx, func(error) {}
	}
	ctx = propagator.Extract(ctx, ceCarrier{&e})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if id := events.RequestID(e); id != "" {
			ctx = trace.ContextWithRemoteSpanContext(ctx, RequestParent(id))
		}
	}
	ctx, span := st.tracer.Start(ctx, "handle "+e.Type(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(ServiceAttr.String(serviceOf(durable)), attribute.String("messaging.consumer.group.name", durable),
			attribute.String("messaging.destination.name", subject), attribute.String("cloudevents.event_id", e.ID()),
			attribute.String("cloudevents.event_type", e.Type())))
	return ctx, ender(span)
}

// serviceOf is the service a durable consumer belongs to ("approval-timeouts"
// → "approval").
func serviceOf(durable string) string {
	for i := 0; i < len(durable); i++ {
		if durable[i] == '-' {
			return durable[:i]
		}
	}
	return durable
}
