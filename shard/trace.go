package shard

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. A replica has no tracer provider of its own: it uses the one of
// the span in the caller's context, so it traces exactly the requests its
// caller traces and costs nothing (a no-op span) otherwise.

const tracerName = "github.com/ringkv/ringkv/shard"

func (r *Replica) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, attribute.Int64("ringkv.partition", int64(r.cfg.Partition)))
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName).Start(ctx, name, trace.WithAttributes(attrs...))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// trackTrace remembers the context of a traced write until untrack is
// called, so that the sync of the log batch holding it becomes a span of it.
func (r *Replica) trackTrace(ctx context.Context, reqID uint64) (untrack func()) {
	r.tracedMu.Lock()
	r.traced[reqID] = ctx
	r.tracedMu.Unlock()
	r.tracedN.Add(1)
	return func() {
		r.tracedMu.Lock()
		delete(r.traced, reqID)
		r.tracedMu.Unlock()
		r.tracedN.Add(-1)
	}
}

// traceStored records, for a traced write in a batch now durable, a span
// covering the batch's log-store write and sync.
func (r *Replica) traceStored(reqID uint64, batch int, start time.Time) {
	r.tracedMu.Lock()
	ctx := r.traced[reqID]
	r.tracedMu.Unlock()
	if ctx == nil {
		return
	}
	childSpan(ctx, "wal.append", start, attribute.Int64("ringkv.partition", int64(r.cfg.Partition)), attribute.Int("ringkv.batch_entries", batch))
}

// childSpan records a span of ctx's trace named name, from start to now.
func childSpan(ctx context.Context, name string, start time.Time, attrs ...attribute.KeyValue) {
	_, span := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName).Start(ctx, name,
		trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	span.End()
}
