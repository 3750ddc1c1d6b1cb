package daemon

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
)

// healthReport is the JSON body of /healthz.
type healthReport struct {
	// Status is "ok" (HTTP 200) or "unavailable" (HTTP 503).
	Status string `json:"status"`
	// Component is planner, executor or watchdog.
	Component string `json:"component"`
	// NATS is the connection's state: connected, reconnecting, draining…
	NATS string `json:"nats"`
	// Reason says why the daemon is unavailable.
	Reason string `json:"reason,omitempty"`
	// Running: the component works (until shutdown starts).
	Running bool `json:"running"`
	// Leader: the planner leads (false: it stands by, which is healthy).
	Leader *bool `json:"leader,omitempty"`
	// Workers and Batches: the executor's workers pulling or working, and
	// the batches they hold.
	Workers *int `json:"workers,omitempty"`
	Batches *int `json:"batches,omitempty"`
}

// healthHandler answers /healthz: 200 while the daemon is connected to
// NATS and its component runs, 503 otherwise (NATS disconnected, shutting
// down, stopped), with a healthReport either way.
type healthHandler struct {
	component string
	conn      *nats.Conn
	stopping  func() bool
	check     func(*healthReport) string
}

func (h *healthHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r := healthReport{Component: h.component, NATS: strings.ToLower(h.conn.Status().String())}
	reason := h.check(&r)
	switch {
	case h.stopping():
		reason = "shutting down"
	case !h.conn.IsConnected():
		reason = "not connected to NATS (" + r.NATS + ")"
	}
	code := http.StatusOK
	r.Status = "ok"
	if reason != "" {
		code, r.Status, r.Reason = http.StatusServiceUnavailable, "unavailable", reason
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}
