package telemetry_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/batchflow/batchflow/internal/telemetry"
)

// Not parallel: the tests set environment variables and the global provider.

func TestNothingConfiguredIsNoop(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	require.False(t, telemetry.Enabled())
	before := otel.GetTracerProvider()
	shutdown, err := telemetry.Setup(context.Background(), "batchflow-test")
	require.NoError(t, err)
	require.NoError(t, shutdown(context.Background()))
	require.Equal(t, before, otel.GetTracerProvider(), "no provider installed without configuration")

	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	require.False(t, telemetry.Enabled())
}

func TestConsoleExporterFromEnvironment(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_SERVICE_NAME", "batchflow-executor-eu")
	require.True(t, telemetry.Enabled())
	shutdown, err := telemetry.Setup(context.Background(), "batchflow-executor")
	require.NoError(t, err)
	defer func() { require.NoError(t, shutdown(context.Background())) }()
	tp, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	require.True(t, ok, "an SDK provider is installed")
	_, span := tp.Tracer("test").Start(context.Background(), "work")
	require.True(t, span.SpanContext().IsValid(), "spans are recorded")
	span.End()
}
