package sink

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Truth reads a throttle query's answer as its driver returns it, the
// same way for every sink: a boolean; a number, non-zero being true (MySQL
// and SQLite have no boolean type); or text, as the databases spell
// booleans ("t", "true", "yes", "on", "1" and their opposites, any case)
// or a number. NULL is an error, not a "no": a throttle query that cannot
// say yes or no holds the work off, with the reason shown, rather than
// never holding it off.
func Truth(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case int64:
		return x != 0, nil
	case int32:
		return x != 0, nil
	case int16:
		return x != 0, nil
	case int8:
		return x != 0, nil
	case int:
		return x != 0, nil
	case uint64:
		return x != 0, nil
	case uint32:
		return x != 0, nil
	case float64:
		return x != 0, nil
	case float32:
		return x != 0, nil
	case []byte:
		return Truth(string(x))
	case string:
		s := strings.ToLower(strings.TrimSpace(x))
		switch s {
		case "1", "t", "true", "y", "yes", "on":
			return true, nil
		case "0", "f", "false", "n", "no", "off":
			return false, nil
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f != 0, nil
		}
		return false, fmt.Errorf("throttle query returned %q, want a boolean", x)
	case nil:
		return false, errors.New("throttle query returned NULL, want a boolean")
	}
	return false, fmt.Errorf("throttle query returned a %T, want a boolean", v)
}
