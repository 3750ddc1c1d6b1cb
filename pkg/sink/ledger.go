package sink

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/batchflow/batchflow/pkg/batches"
)

// The ledger (DESIGN.md §6) has one row per batch:
//
//	batchflow_ledger(migration, batch_seq, checkpoint, rows_affected, failed_keys, updated_at)
//	PRIMARY KEY (migration, batch_seq)
//
// checkpoint holds the last key applied as text (EncodeKey): the decimal
// form of an integer key, or the string key itself; NULL before the first
// sub-batch. failed_keys holds the keys skipped under on_row_error skip as
// a JSON array, so they are recorded exactly once, with the checkpoint move.

// EncodeKey returns the ledger's text form of k: nil for null, so the
// column is NULL.
func EncodeKey(k batches.Key) any {
	switch {
	case k.IsNull():
		return nil
	case k.IsInt():
		return strconv.FormatInt(k.Int(), 10)
	}
	return k.Text()
}

// DecodeKey reads the ledger's text form back as a key of type kt; a nil
// text is the null key.
func DecodeKey(text *string, kt KeyType) (batches.Key, error) {
	if text == nil {
		return batches.Key{}, nil
	}
	switch kt {
	case KeyInt:
		i, err := strconv.ParseInt(*text, 10, 64)
		if err != nil {
			return batches.Key{}, fmt.Errorf("ledger checkpoint %q is not an integer key: %w", *text, err)
		}
		return batches.IntKey(i), nil
	case KeyString:
		return batches.StringKey(*text), nil
	}
	return batches.Key{}, fmt.Errorf("ledger checkpoint %q: %w", *text, ErrUnsupportedKey)
}

// EncodeFailedKeys appends key to the ledger's JSON list of failed keys.
func EncodeFailedKeys(existing *string, key batches.Key) (string, error) {
	keys, err := DecodeFailedKeys(existing)
	if err != nil {
		return "", err
	}
	out, err := json.Marshal(append(keys, key))
	return string(out), err
}

// DecodeFailedKeys reads the ledger's JSON list of failed keys; NULL is none.
func DecodeFailedKeys(text *string) ([]batches.Key, error) {
	if text == nil || *text == "" {
		return nil, nil
	}
	var keys []batches.Key
	if err := json.Unmarshal([]byte(*text), &keys); err != nil {
		return nil, fmt.Errorf("ledger failed_keys: %w", err)
	}
	return keys, nil
}

// KeyValue converts a value scanned from a batch column into a key of type
// kt: database drivers return integers as int64 (or []byte/string in
// some MySQL modes) and strings as string or []byte.
func KeyValue(v any, kt KeyType) (batches.Key, error) {
	if v == nil {
		return batches.Key{}, nil
	}
	switch kt {
	case KeyInt:
		switch x := v.(type) {
		case int64:
			return batches.IntKey(x), nil
		case int32:
			return batches.IntKey(int64(x)), nil
		case int16:
			return batches.IntKey(int64(x)), nil
		case int:
			return batches.IntKey(int64(x)), nil
		case uint64:
			if x > 1<<63-1 {
				return batches.Key{}, fmt.Errorf("key %d is beyond the 64-bit signed range", x)
			}
			return batches.IntKey(int64(x)), nil
		case []byte:
			return KeyValue(string(x), kt)
		case string:
			i, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return batches.Key{}, fmt.Errorf("key %q is not an integer", x)
			}
			return batches.IntKey(i), nil
		}
	case KeyString:
		switch x := v.(type) {
		case string:
			return batches.StringKey(x), nil
		case []byte:
			return batches.StringKey(string(x)), nil
		case fmt.Stringer: // uuid types
			return batches.StringKey(x.String()), nil
		}
	}
	return batches.Key{}, fmt.Errorf("cannot use %T as a %s key", v, kt)
}
