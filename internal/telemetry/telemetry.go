// Package telemetry sets up OpenTelemetry tracing and metrics for the
// batchflow binaries from the standard OTEL_* environment variables. With
// none of them set it installs nothing: tracing stays a no-op and no
// exporter tries to reach a collector that is not there. Metrics are also
// served to Prometheus when a daemon asks for it (--http-addr).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Enabled reports whether the environment asks for traces: an exporter
// named in OTEL_TRACES_EXPORTER (other than "none") or an OTLP endpoint.
func Enabled() bool {
	if v := os.Getenv("OTEL_TRACES_EXPORTER"); v != "" {
		return v != "none"
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if os.Getenv(k) != "" {
			return true
		}
	}
	return false
}

// Setup installs a global tracer provider exporting as the OTEL_*
// variables say (OTLP over HTTP or gRPC, console), named service unless
// OTEL_SERVICE_NAME says otherwise, and the W3C propagators. The returned
// shutdown flushes the spans still buffered; call it before exiting.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exporter, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("opentelemetry exporter: %w", err)
	}
	res, err := newResource(ctx, service)
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// newResource describes the process to a collector: service, host, pid.
func newResource(ctx context.Context, service string) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("opentelemetry resource: %w", err)
	}
	return res, nil
}
