package bus

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// messagingSystem is the messaging.system value for NATS; semconv has no
// constant for it.
var messagingSystem = semconv.MessagingSystemKey.String("nats")

// StartPublishSpan starts the PRODUCER span of a JetStream publish, named
// "send <subject>", and injects its context into msg's header so the
// consumer's span joins the trace.
func StartPublishSpan(ctx context.Context, tracer trace.Tracer, msg *nats.Msg, msgID string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx, span := tracer.Start(ctx, "send "+msg.Subject,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			messagingSystem,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName(msg.Subject),
			semconv.MessagingMessageID(msgID),
		),
		trace.WithAttributes(attrs...),
	)
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	InjectTrace(ctx, msg.Header)
	return ctx, span
}

// StartProcessSpan starts the CONSUMER span of processing a message, named
// "process <subject>", parented on the trace context in its header.
func StartProcessSpan(ctx context.Context, tracer trace.Tracer, subject string, header nats.Header, consumer, msgID string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = ExtractTrace(ctx, header)
	return tracer.Start(ctx, "process "+subject,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			messagingSystem,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(subject),
			semconv.MessagingConsumerGroupName(consumer),
			semconv.MessagingMessageID(msgID),
		),
		trace.WithAttributes(attrs...),
	)
}
