package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/urfave/cli/v3"
)

const (
	flagHTTPAddr        = "http-addr"
	envHTTPAddr         = "BATCHFLOW_HTTP_ADDR"
	categoryObservation = "Observability"
)

// HTTPAddrFlag returns --http-addr, the address the daemons serve /healthz
// and /metrics on. It is not a common flag: the operator's one-shot
// commands serve nothing.
func HTTPAddrFlag() cli.Flag {
	return &cli.StringFlag{
		Name:     flagHTTPAddr,
		Usage:    "serve /healthz and /metrics on `ADDR` (host:port, or :port for every interface, e.g. :9090); off when empty",
		Sources:  cli.EnvVars(envHTTPAddr),
		Category: categoryObservation,
	}
}

// HTTPAddr reads --http-addr (BATCHFLOW_HTTP_ADDR) from cmd or an ancestor:
// "" when off, else a host:port that net.Listen takes. Port 0 picks a
// free port.
func HTTPAddr(cmd *cli.Command) (string, error) {
	addr := strings.TrimSpace(cmd.String(flagHTTPAddr))
	if addr == "" {
		return "", nil
	}
	ref := flagRef{flagHTTPAddr, envHTTPAddr}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s wants HOST:PORT or :PORT, got %q", ref, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("%s: port %q is not a number from 0 to 65535", ref, port)
	}
	return addr, nil
}
