package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/batchflow/batchflow/internal/telemetry"
)

// Not parallel: the tests set environment variables.

func clearMetricsEnv(t *testing.T) {
	for _, k := range []string{"OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		t.Setenv(k, "")
	}
}

func TestMetricsOffCostNothing(t *testing.T) {
	clearMetricsEnv(t)
	m, err := telemetry.SetupMetrics(context.Background(), "batchflow-test", false)
	require.NoError(t, err)
	require.IsType(t, noop.MeterProvider{}, m.Provider, "no reader, no SDK")
	require.Nil(t, m.Handler)
	require.NoError(t, m.Shutdown(context.Background()))

	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	m, err = telemetry.SetupMetrics(context.Background(), "batchflow-test", false)
	require.NoError(t, err)
	require.IsType(t, noop.MeterProvider{}, m.Provider)
}

func TestPrometheusHandler(t *testing.T) {
	clearMetricsEnv(t)
	t.Setenv("OTEL_METRICS_EXPORTER", "prometheus") // served by the handler, not by a server of its own
	m, err := telemetry.SetupMetrics(context.Background(), "batchflow-test", true)
	require.NoError(t, err)
	defer func() { require.NoError(t, m.Shutdown(context.Background())) }()
	require.NotNil(t, m.Handler)
	rows, err := m.Provider.Meter("test").Int64Counter("batchflow.rows.applied")
	require.NoError(t, err)
	rows.Add(context.Background(), 42)

	rec := httptest.NewRecorder()
	m.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	body, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), "batchflow_rows_applied_total 42\n", "dots become underscores, counters end in _total, no scope labels")
	require.Contains(t, string(body), `service_name="batchflow-test"`, "target_info names the service")
	require.Contains(t, string(body), "go_goroutines ")
	require.Contains(t, string(body), "process_cpu_seconds_total ")
}

func TestMetricsExporterFromEnvironment(t *testing.T) {
	clearMetricsEnv(t)
	t.Setenv("OTEL_METRICS_EXPORTER", "console")
	m, err := telemetry.SetupMetrics(context.Background(), "batchflow-test", false)
	require.NoError(t, err)
	require.IsType(t, &sdkmetric.MeterProvider{}, m.Provider)
	require.Nil(t, m.Handler)
	require.NoError(t, m.Shutdown(context.Background()))

	t.Setenv("OTEL_METRICS_EXPORTER", "carrier-pigeon")
	_, err = telemetry.SetupMetrics(context.Background(), "batchflow-test", true)
	require.ErrorContains(t, err, `"carrier-pigeon"`)
}
