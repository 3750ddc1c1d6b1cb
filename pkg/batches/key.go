package batches

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Key is a value of a migration's batch column: an integer (bigint keys) or a
// string (text and uuid keys), or null when unset. In JSON it is a number, a
// string or null; integers travel as exact int64 values, never as floats.
//
// The zero Key is null.
type Key struct {
	kind keyKind
	i    int64
	s    string
}

type keyKind uint8

const (
	keyNull keyKind = iota
	keyInt
	keyString
)

// IntKey returns an integer key.
func IntKey(i int64) Key { return Key{kind: keyInt, i: i} }

// StringKey returns a string key (text, uuid).
func StringKey(s string) Key { return Key{kind: keyString, s: s} }

// IsNull reports whether the key is unset.
func (k Key) IsNull() bool { return k.kind == keyNull }

// IsInt reports whether the key is an integer.
func (k Key) IsInt() bool { return k.kind == keyInt }

// IsString reports whether the key is a string.
func (k Key) IsString() bool { return k.kind == keyString }

// Int returns the integer value; 0 unless IsInt.
func (k Key) Int() int64 { return k.i }

// Text returns the string value; "" unless IsString.
func (k Key) Text() string { return k.s }

// Value returns the key as a driver value to bind as a query parameter:
// int64, string or nil.
func (k Key) Value() any {
	switch k.kind {
	case keyInt:
		return k.i
	case keyString:
		return k.s
	}
	return nil
}

// String formats the key for people: 42, "a1b2" (quoted) or null.
func (k Key) String() string {
	switch k.kind {
	case keyInt:
		return strconv.FormatInt(k.i, 10)
	case keyString:
		return strconv.Quote(k.s)
	}
	return "null"
}

// Equal reports whether both keys have the same kind and value.
func (k Key) Equal(o Key) bool { return k == o }

// Compare orders keys of the same kind: integers numerically, strings
// bytewise. Null sorts first, then integers, then strings. Bytewise order is
// not a database collation: the planner asks the database for key order and
// uses Compare only for sanity checks and progress estimates.
func (k Key) Compare(o Key) int {
	if k.kind != o.kind {
		return int(k.kind) - int(o.kind)
	}
	switch k.kind {
	case keyInt:
		switch {
		case k.i < o.i:
			return -1
		case k.i > o.i:
			return 1
		}
		return 0
	case keyString:
		return strings.Compare(k.s, o.s)
	}
	return 0
}

// MarshalJSON writes a number, a string or null.
func (k Key) MarshalJSON() ([]byte, error) {
	switch k.kind {
	case keyInt:
		return strconv.AppendInt(nil, k.i, 10), nil
	case keyString:
		return json.Marshal(k.s)
	}
	return []byte("null"), nil
}

// errKeyType is the message for a key that is neither an integer nor a string.
var errKeyType = errors.New("must be an integer, a string or null")

// UnmarshalJSON reads a number (an integer within int64), a string or null.
func (k *Key) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case len(data) == 0:
		return errKeyType
	case string(data) == "null":
		*k = Key{}
		return nil
	case data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*k = StringKey(s)
		return nil
	case data[0] == '-' || (data[0] >= '0' && data[0] <= '9'):
		i, err := strconv.ParseInt(string(data), 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return fmt.Errorf("integer %s is out of the 64-bit range", data)
			}
			return fmt.Errorf("%s is not an integer: keys are integers or strings", data)
		}
		*k = IntKey(i)
		return nil
	}
	return errKeyType
}
