package mysql_test

import (
	"testing"

	"github.com/batchflow/batchflow/internal/testenv"
	_ "github.com/batchflow/batchflow/pkg/sink/mysql" // registers mysql://
	"github.com/batchflow/batchflow/pkg/sink/sinktest"
)

func TestConformance(t *testing.T) {
	sinktest.Run(t, testenv.DialectMySQL)
}
