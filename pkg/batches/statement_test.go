package batches_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
)

func TestSplitStatement(t *testing.T) {
	t.Parallel()
	text := func(s string) batches.StatementPart { return batches.StatementPart{Text: s} }
	ph := func(s string) batches.StatementPart { return batches.StatementPart{Placeholder: s} }
	cases := []struct {
		in   string
		want []batches.StatementPart
	}{
		{"UPDATE t SET n = n + 1 WHERE id > :lo AND id <= :hi",
			[]batches.StatementPart{text("UPDATE t SET n = n + 1 WHERE id > "), ph("lo"), text(" AND id <= "), ph("hi")}},
		{":lo:hi", []batches.StatementPart{ph("lo"), ph("hi")}},
		// Casts, longer names and quoted text are not placeholders.
		{"SELECT x::hi, :high, ':lo', \":hi\", `:lo` WHERE a > :lo",
			[]batches.StatementPart{text("SELECT x::hi, :high, ':lo', \":hi\", `:lo` WHERE a > "), ph("lo")}},
		{"id BETWEEN :lo+1 AND :hi;", []batches.StatementPart{text("id BETWEEN "), ph("lo"), text("+1 AND "), ph("hi"), text(";")}},
		{"no placeholders", []batches.StatementPart{text("no placeholders")}},
		{"", nil},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, batches.SplitStatement(tc.in), tc.in)
	}
}
