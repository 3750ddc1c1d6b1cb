package postgres_test

import (
	"testing"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/sink/sinktest"

	_ "github.com/batchflow/batchflow/pkg/sink/postgres"
)

func TestConformance(t *testing.T) { sinktest.Run(t, testenv.DialectPostgres) }
