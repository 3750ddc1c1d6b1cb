package sqlite_test

import (
	"testing"

	"github.com/batchflow/batchflow/internal/testenv"
	"github.com/batchflow/batchflow/pkg/sink/sinktest"
	_ "github.com/batchflow/batchflow/pkg/sink/sqlite"
)

func TestConformance(t *testing.T) { sinktest.Run(t, testenv.DialectSQLite) }
