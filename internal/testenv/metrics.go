package testenv

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Metrics is an in-memory OpenTelemetry meter provider for one test: give
// Provider to a component's Config.MeterProvider, then read what it
// recorded. The reads collect on the spot, so they see every measurement
// made before them.
type Metrics struct {
	Provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
}

// NewMetrics returns a meter provider shut down at cleanup.
func NewMetrics(t testing.TB) *Metrics {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return &Metrics{Provider: mp, reader: reader}
}

// Point is one data point of an instrument: a counter's sum, a gauge's
// value, or a histogram's count and sum.
type Point struct {
	Attrs attribute.Set
	Value float64 // counters, up-down counters, gauges
	Count uint64  // histograms
	Sum   float64 // histograms
}

// Points returns the data points of the instrument called name whose
// attributes include attrs; none when it recorded nothing.
func (m *Metrics) Points(t testing.TB, name string, attrs ...attribute.KeyValue) []Point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("testenv: collect metrics: %v", err)
	}
	var out []Point
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if md.Name != name {
				continue
			}
			for _, p := range points(md.Data) {
				if includes(p.Attrs, attrs) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// Value is the total over Points of counters and gauges (0 when none).
func (m *Metrics) Value(t testing.TB, name string, attrs ...attribute.KeyValue) float64 {
	t.Helper()
	var v float64
	for _, p := range m.Points(t, name, attrs...) {
		v += p.Value
	}
	return v
}

// Count is the total count over Points of a histogram (0 when none).
func (m *Metrics) Count(t testing.TB, name string, attrs ...attribute.KeyValue) uint64 {
	t.Helper()
	var n uint64
	for _, p := range m.Points(t, name, attrs...) {
		n += p.Count
	}
	return n
}

func points(data metricdata.Aggregation) []Point {
	var out []Point
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, Point{Attrs: p.Attributes, Value: float64(p.Value)})
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			out = append(out, Point{Attrs: p.Attributes, Value: p.Value})
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out = append(out, Point{Attrs: p.Attributes, Value: float64(p.Value)})
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			out = append(out, Point{Attrs: p.Attributes, Value: p.Value})
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			out = append(out, Point{Attrs: p.Attributes, Count: p.Count, Sum: float64(p.Sum)})
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, Point{Attrs: p.Attributes, Count: p.Count, Sum: p.Sum})
		}
	}
	return out
}

func includes(set attribute.Set, attrs []attribute.KeyValue) bool {
	for _, want := range attrs {
		got, ok := set.Value(want.Key)
		if !ok || got != want.Value {
			return false
		}
	}
	return true
}
