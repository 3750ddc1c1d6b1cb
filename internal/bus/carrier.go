package bus

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// HeaderCarrier lets OpenTelemetry propagators read and write NATS message
// headers. It writes keys in lower case, as W3C Trace Context spells them
// ("traceparent", the DESIGN.md §3 contract), where propagation.HeaderCarrier
// would write "Traceparent"; it reads case-insensitively, because
// nats.Header is a plain case-sensitive map and other publishers (HTTP
// gateways, other languages' clients) may capitalise.
type HeaderCarrier nats.Header

var (
	_ propagation.TextMapCarrier = HeaderCarrier{}
	_ propagation.ValuesGetter   = HeaderCarrier{}
)

// Get returns the first value of key, whatever its case in the header.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Values returns every value of key, under any spelling of it; the baggage
// propagator joins them.
func (c HeaderCarrier) Values(key string) []string {
	var values []string
	for k, v := range c {
		if strings.EqualFold(k, key) {
			values = append(values, v...)
		}
	}
	return values
}

// Set stores value under the lower-case key, replacing any other spelling of
// it so a message never carries two competing trace parents.
func (c HeaderCarrier) Set(key, value string) {
	lower := strings.ToLower(key)
	for k := range c {
		if k != lower && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[lower] = []string{value}
}

// Keys lists the header's keys as stored.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// tracePropagator is fixed rather than otel.GetTextMapPropagator(): the
// global one is a no-op until a program sets it, and the header format is a
// contract, not a deployment choice.
var tracePropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// InjectTrace writes ctx's span context (and baggage) into h, so the
// consumer's span joins the producer's trace. A nil h is left alone: create
// messages with nats.NewMsg, which allocates the header.
func InjectTrace(ctx context.Context, h nats.Header) {
	if h == nil {
		return
	}
	tracePropagator.Inject(ctx, HeaderCarrier(h))
}

// ExtractTrace returns ctx carrying the remote span context (and baggage)
// found in h; ctx itself when h holds none.
func ExtractTrace(ctx context.Context, h nats.Header) context.Context {
	return tracePropagator.Extract(ctx, HeaderCarrier(h))
}
