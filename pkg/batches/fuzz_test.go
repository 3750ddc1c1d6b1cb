package batches_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/batchflow/batchflow/pkg/batches"
)

// FuzzParseSpec feeds arbitrary bytes to the parser the planner runs on
// every enqueue message. Whatever arrives, ParseSpec must not panic, must
// report problems as a *ValidationError, and a spec it accepts must survive
// a round trip through its own JSON unchanged and still be valid.
//
//	go test ./pkg/batches -run '^$' -fuzz FuzzParseSpec -fuzztime 60s
func FuzzParseSpec(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/specs/*.json")
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"name": "m", "target": "t", "kind": "sql", "table": "x", "args": {"statement": "x :lo :hi"}, "batch_size": 0}`))
	f.Add([]byte(`{"name": "a", "name": "b"}`))
	f.Add([]byte(`[`))
	f.Add([]byte(`{"min_value": 1e400}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := batches.ParseSpec(data)
		if err != nil {
			var verr *batches.ValidationError
			if !errors.As(err, &verr) || len(verr.Problems) == 0 {
				t.Fatalf("error is not a ValidationError with problems: %v", err)
			}
			for _, p := range verr.Problems {
				if p.Message == "" {
					t.Fatalf("problem without a message: %+v", p)
				}
			}
			return
		}
		if !batches.ValidName(spec.Name) {
			t.Fatalf("accepted an invalid name %q", spec.Name)
		}
		if !batches.ValidTableName(spec.Table) {
			t.Fatalf("accepted an invalid table %q", spec.Table)
		}
		out, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("marshal accepted spec: %v", err)
		}
		again, err := batches.ParseSpec(out)
		if err != nil {
			t.Fatalf("own output rejected: %v\n%s", err, out)
		}
		if !again.Same(spec) {
			t.Fatalf("round trip changed the spec:\n%s", out)
		}
	})
}
