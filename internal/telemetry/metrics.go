package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics is a process's meter provider and what exports it.
type Metrics struct {
	// Provider gives the process's meters. It is a no-op provider when
	// nothing exports metrics, so instruments then cost nothing.
	Provider metric.MeterProvider
	// Handler serves the metrics in the Prometheus text format, with the
	// Go runtime and process collectors; nil unless SetupMetrics was
	// asked for Prometheus.
	Handler http.Handler

	shutdown func(context.Context) error
}

// metricsExporter is the exporter the environment names for metrics:
// OTEL_METRICS_EXPORTER, else "otlp" when an OTLP endpoint is set, else "".
func metricsExporter() string {
	if v := strings.TrimSpace(os.Getenv("OTEL_METRICS_EXPORTER")); v != "" {
		return v
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		if os.Getenv(k) != "" {
			return "otlp"
		}
	}
	return ""
}

// SetupMetrics builds the meter provider of a daemon named service (unless
// OTEL_SERVICE_NAME says otherwise). With prometheus, its metrics are
// collected into a registry of their own, served by Handler. The standard
// OTEL_* variables add an exporter: OTEL_METRICS_EXPORTER=otlp (or an
// OTLP endpoint) pushes them to a collector, "console" prints them,
// "prometheus" serves them on OTEL_EXPORTER_PROMETHEUS_HOST:PORT unless
// prometheus is already true, "none" adds nothing. The provider is not
// made global: the daemon hands it to its component. Shutdown flushes it.
func SetupMetrics(ctx context.Context, service string, prometheus bool) (*Metrics, error) {
	var readers []sdkmetric.Reader
	m := &Metrics{}
	if prometheus {
		reader, handler, err := prometheusReader()
		if err != nil {
			return nil, err
		}
		readers = append(readers, reader)
		m.Handler = handler
	}
	switch name := metricsExporter(); {
	case name == "", name == "none", name == "prometheus" && prometheus:
	default:
		reader, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("opentelemetry metrics exporter %q: %w", name, err), shutdownReaders(ctx, readers))
		}
		readers = append(readers, reader)
	}
	if len(readers) == 0 {
		m.Provider = noop.NewMeterProvider()
		m.shutdown = func(context.Context) error { return nil }
		return m, nil
	}
	res, err := newResource(ctx, service)
	if err != nil {
		return nil, errors.Join(err, shutdownReaders(ctx, readers))
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	m.Provider, m.shutdown = mp, mp.Shutdown
	return m, nil
}

// Shutdown exports what a push exporter still holds and stops the readers.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.shutdown(ctx) }

// prometheusReader is the OpenTelemetry Prometheus exporter on a registry
// of its own (not the global one, which other libraries fill), with the Go
// runtime and process metrics beside batchflow's. The metric names say
// whose they are, so the otel_scope_* labels would only be noise.
func prometheusReader() (sdkmetric.Reader, http.Handler, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, err
	}
	reader, err := promexporter.New(promexporter.WithRegisterer(reg), promexporter.WithoutScopeInfo())
	if err != nil {
		return nil, nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	return reader, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), nil
}

func shutdownReaders(ctx context.Context, readers []sdkmetric.Reader) error {
	var errs []error
	for _, r := range readers {
		errs = append(errs, r.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
