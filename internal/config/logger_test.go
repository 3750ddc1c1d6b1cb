package config_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/config"
)

func TestNewLogger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		format, level string
		json          bool
		debug, info   bool // whether a debug and an info record get through
		warn          bool
	}{
		{name: "defaults", format: "", level: "", info: true, warn: true},
		{name: "text debug", format: "text", level: "debug", debug: true, info: true, warn: true},
		{name: "json info", format: "json", level: "info", json: true, info: true, warn: true},
		{name: "json warn", format: "json", level: "warn", json: true, warn: true},
		{name: "any case", format: "JSON", level: "Error", json: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			logger, err := config.NewLogger(&buf, tt.format, tt.level)
			require.NoError(t, err)

			for _, c := range []struct {
				log  func(string, ...any)
				msg  string
				want bool
			}{
				{logger.Debug, "planner: debug record", tt.debug},
				{logger.Info, "planner: info record", tt.info},
				{logger.Warn, "planner: warn record", tt.warn},
			} {
				buf.Reset()
				c.log(c.msg, "migration", "backfill_users")
				if !c.want {
					require.Empty(t, buf.String(), c.msg)
					continue
				}
				if tt.json {
					var rec map[string]any
					require.NoError(t, json.Unmarshal(buf.Bytes(), &rec), buf.String())
					require.Equal(t, c.msg, rec["msg"])
					require.Equal(t, "backfill_users", rec["migration"])
				} else {
					require.Contains(t, buf.String(), `msg="`+c.msg+`" migration=backfill_users`)
				}
			}
			buf.Reset()
			logger.Error("planner: error record")
			require.NotEmpty(t, buf.String(), "errors always get through")
		})
	}
}

func TestNewLoggerErrors(t *testing.T) {
	t.Parallel()
	_, err := config.NewLogger(&bytes.Buffer{}, "xml", "info")
	require.EqualError(t, err, `invalid log format "xml": use text or json`)
	_, err = config.NewLogger(&bytes.Buffer{}, "text", "trace")
	require.EqualError(t, err, `invalid log level "trace": use debug, info, warn or error`)
	_, err = config.NewLogger(&bytes.Buffer{}, "text", "info+2")
	require.EqualError(t, err, `invalid log level "info+2": use debug, info, warn or error`)
}
