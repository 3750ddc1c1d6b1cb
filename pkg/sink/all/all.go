// Package all registers every sink batchflow ships: import it for its side
// effect in a binary that should reach Postgres, MySQL/MariaDB and SQLite.
//
//	import _ "github.com/batchflow/batchflow/pkg/sink/all"
package all

import (
	_ "github.com/batchflow/batchflow/pkg/sink/mysql"    // mysql://
	_ "github.com/batchflow/batchflow/pkg/sink/postgres" // postgres://, postgresql://
	_ "github.com/batchflow/batchflow/pkg/sink/sqlite"   // sqlite://
)
