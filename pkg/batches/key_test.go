package batches_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/batches"
)

func TestKeyJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want batches.Key
	}{
		{`42`, batches.IntKey(42)},
		{`-7`, batches.IntKey(-7)},
		{`9223372036854775807`, batches.IntKey(math.MaxInt64)},
		{`"42"`, batches.StringKey("42")},
		{`"3f2c9a3e-5d1b-4c7a-9d44-0e6f1a2b3c4d"`, batches.StringKey("3f2c9a3e-5d1b-4c7a-9d44-0e6f1a2b3c4d")},
		{`null`, batches.Key{}},
	}
	for _, tc := range cases {
		var k batches.Key
		require.NoError(t, json.Unmarshal([]byte(tc.in), &k), tc.in)
		require.Equal(t, tc.want, k, tc.in)
		out, err := json.Marshal(k)
		require.NoError(t, err)
		require.JSONEq(t, tc.in, string(out), "round trip keeps the type: a text key \"42\" is not the integer 42")
	}
	for _, bad := range []string{`1.5`, `1e3`, `true`, `{}`, `[1]`, `18446744073709551616`} {
		var k batches.Key
		require.Error(t, json.Unmarshal([]byte(bad), &k), bad)
	}
}

func TestKeyCompare(t *testing.T) {
	t.Parallel()
	require.Negative(t, batches.IntKey(2).Compare(batches.IntKey(10)), "integers compare numerically")
	require.Positive(t, batches.StringKey("2").Compare(batches.StringKey("10")), "strings compare bytewise")
	require.Negative(t, batches.Key{}.Compare(batches.IntKey(math.MinInt64)), "null sorts first")
	require.Zero(t, batches.StringKey("a").Compare(batches.StringKey("a")))
	require.Equal(t, int64(5), batches.IntKey(5).Value())
	require.Equal(t, "x", batches.StringKey("x").Value())
	require.Nil(t, batches.Key{}.Value())
	require.Equal(t, `"x"`, batches.StringKey("x").String())
	require.Equal(t, "null", batches.Key{}.String())
}
