package mysql

import (
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/batchflow/batchflow/internal/mysqldsn"
)

// ErrInvalidURL is wrapped by every ParseURL error, so a caller that reads
// DSNs from flags can tell a typo in the target from a server that is down.
var ErrInvalidURL = mysqldsn.ErrInvalidURL

// DefaultDialTimeout bounds connecting when the URL sets no timeout.
const DefaultDialTimeout = mysqldsn.DefaultDialTimeout

// ParseURL converts batchflow's mysql://user:password@host:port/database?…
// form into the driver's configuration; see internal/mysqldsn for every rule.
// Errors never contain the password.
func ParseURL(dsn string) (*gomysql.Config, error) { return mysqldsn.ParseURL(dsn) }
