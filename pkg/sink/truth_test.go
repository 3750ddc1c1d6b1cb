package sink_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/pkg/sink"
)

func TestTruth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v    any
		want bool
	}{
		{true, true}, {false, false},
		{int64(1), true}, {int64(0), false}, {int32(-1), true}, {int16(0), false}, {uint64(2), true},
		{1.5, true}, {float32(0), false},
		{"t", true}, {"F", false}, {" TRUE ", true}, {"yes", true}, {"off", false}, {"1", true}, {"0.0", false},
		{[]byte("t"), true}, {[]byte("0"), false},
	} {
		got, err := sink.Truth(tc.v)
		require.NoError(t, err, "%#v", tc.v)
		require.Equal(t, tc.want, got, "%#v", tc.v)
	}
	for v, msg := range map[any]string{
		nil:     "throttle query returned NULL, want a boolean",
		"maybe": `throttle query returned "maybe", want a boolean`,
		3.5i:    "throttle query returned a complex128, want a boolean",
	} {
		_, err := sink.Truth(v)
		require.EqualError(t, err, msg)
	}
}
