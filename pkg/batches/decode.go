package batches

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// MaxSpecBytes bounds an enqueue message; a spec is a few hundred bytes.
const MaxSpecBytes = 1 << 20

// DecodeSpec decodes a JSON spec strictly: unknown fields, duplicate fields,
// values of the wrong type, explicit zero or negative sizes and trailing
// data are all problems, collected into one *ValidationError. It does not
// apply defaults nor check the spec as a whole: ParseSpec does all three.
//
// On error the returned Spec holds every field that did decode, so a caller
// can still name the migration a rejection is about.
func DecodeSpec(data []byte) (Spec, error) {
	var s Spec
	if len(data) > MaxSpecBytes {
		return s, invalid(Problem{Message: fmt.Sprintf("spec is %d bytes, more than the %d allowed", len(data), MaxSpecBytes)})
	}
	problems := decodeObject("", data, specFields(&s))
	if len(problems) > 0 {
		return s, &ValidationError{Problems: problems}
	}
	return s, nil
}

// ParseSpec decodes data strictly, applies defaults and validates the result
// (everything that can be checked without a database). Every problem found
// is in the returned *ValidationError. The returned Spec is usable for its
// Name even on error.
func ParseSpec(data []byte) (Spec, error) {
	s, err := DecodeSpec(data)
	var problems []Problem
	var verr *ValidationError
	if errors.As(err, &verr) {
		problems = verr.Problems
		for _, p := range problems {
			if p.Field == "" {
				// Not a JSON object at all: listing every missing field
				// would bury the one problem that matters.
				return s, verr
			}
		}
	}
	s = s.WithDefaults()
	if err := s.Validate(); errors.As(err, &verr) {
		problems = mergeProblems(problems, verr.Problems)
	}
	if len(problems) > 0 {
		return s, &ValidationError{Problems: problems}
	}
	return s, nil
}

// mergeProblems appends the problems of b that a does not already report for
// the same field: a field that failed to decode also reads as missing to
// Validate, and one message about it is enough.
func mergeProblems(a, b []Problem) []Problem {
	seen := make(map[string]bool, len(a))
	for _, p := range a {
		seen[p.Field] = true
	}
	for _, p := range b {
		if !seen[p.Field] || p.Field == "" {
			a = append(a, p)
		}
	}
	return a
}

// fieldDecoder decodes one field's raw value; path is the field's full name
// for messages ("throttle.query").
type fieldDecoder func(path string, raw json.RawMessage) []Problem

func specFields(s *Spec) map[string]fieldDecoder {
	return map[string]fieldDecoder{
		"name":             stringField(&s.Name),
		"target":           stringField(&s.Target),
		"kind":             stringField(&s.Kind),
		"table":            stringField(&s.Table),
		"batch_column":     stringField(&s.BatchColumn),
		"args":             rawObjectField(&s.Args),
		"where":            stringField(&s.Where),
		"min_value":        keyField(&s.MinValue),
		"max_value":        keyField(&s.MaxValue),
		"batch_size":       positiveIntField(&s.BatchSize),
		"sub_batch_size":   positiveIntField(&s.SubBatchSize),
		"sub_batch_target": optionalDurationField(&s.SubBatchTarget),
		"sub_batch_pause":  durationField(&s.SubBatchPause, false),
		"batch_pause":      durationField(&s.BatchPause, false),
		"parallelism":      positiveIntField(&s.Parallelism),
		"max_attempts":     positiveIntField(&s.MaxAttempts),
		"after":            stringListField(&s.After),
		"throttle": func(path string, raw json.RawMessage) []Problem {
			var t Throttle
			problems := decodeObject(path, raw, map[string]fieldDecoder{
				"max_replication_lag": durationField(&t.MaxReplicationLag, false),
				"query":               stringField(&t.Query),
			})
			s.Throttle = &t
			return problems
		},
		"health_check": func(path string, raw json.RawMessage) []Problem {
			return decodeObject(path, raw, map[string]fieldDecoder{
				"frequency": durationField(&s.HealthCheck.Frequency, true),
				"timeout":   durationField(&s.HealthCheck.Timeout, true),
			})
		},
		"on_row_error": func(path string, raw json.RawMessage) []Problem {
			var v string
			p := stringField(&v)(path, raw)
			s.OnRowError = RowErrorPolicy(v)
			return p
		},
	}
}

// decodeObject decodes a JSON object field by field so that every problem
// is reported, not only the first as encoding/json would. A null object is
// treated as absent.
func decodeObject(path string, raw json.RawMessage, fields map[string]fieldDecoder) []Problem {
	members, err := objectMembers(raw)
	if err != nil {
		return []Problem{{Field: path, Message: err.Error()}}
	}
	var problems []Problem
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		name := join(path, m.name)
		if seen[m.name] {
			problems = append(problems, Problem{Field: name, Message: "appears more than once"})
			continue
		}
		seen[m.name] = true
		decode, ok := fields[m.name]
		if !ok {
			problems = append(problems, Problem{Field: name, Message: unknownFieldMessage(m.name, fields)})
			continue
		}
		if isNull(m.value) {
			continue // absent: the default applies
		}
		problems = append(problems, decode(name, m.value)...)
	}
	return problems
}

type member struct {
	name  string
	value json.RawMessage
}

// objectMembers splits a JSON object into its members in order. It rejects
// anything that is not exactly one object (trailing data included).
func objectMembers(raw json.RawMessage) ([]member, error) {
	if isNull(raw) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxMessage(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("must be a JSON object, got %s", jsonKind(raw))
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxMessage(err)
		}
		name, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, syntaxMessage(err)
		}
		members = append(members, member{name: name, value: value})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, syntaxMessage(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON object")
	}
	return members, nil
}

func syntaxMessage(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("malformed JSON: unexpected end of input")
	}
	return fmt.Errorf("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func stringField(dst *string) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		if err := json.Unmarshal(raw, dst); err != nil {
			return []Problem{{Field: path, Message: "must be a string, got " + jsonKind(raw)}}
		}
		return nil
	}
}

func positiveIntField(dst *int) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil || !isNumber(raw) {
			return []Problem{{Field: path, Message: "must be an integer, got " + jsonKind(raw)}}
		}
		v, err := n.Int64()
		if err != nil {
			return []Problem{{Field: path, Message: fmt.Sprintf("must be a whole number, got %s", n)}}
		}
		if v < 1 {
			return []Problem{{Field: path, Message: fmt.Sprintf("must be at least 1, got %d", v)}}
		}
		if v > 1<<31 {
			return []Problem{{Field: path, Message: fmt.Sprintf("%d is too large", v)}}
		}
		*dst = int(v)
		return nil
	}
}

func durationField(dst *Duration, positive bool) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		var d Duration
		if err := d.UnmarshalJSON(raw); err != nil {
			return []Problem{{Field: path, Message: err.Error()}}
		}
		if d < 0 {
			return []Problem{{Field: path, Message: fmt.Sprintf("must not be negative, got %s", d)}}
		}
		if positive && d == 0 {
			return []Problem{{Field: path, Message: "must be greater than 0s"}}
		}
		*dst = d
		return nil
	}
}

func optionalDurationField(dst **Duration) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		var d Duration
		if p := durationField(&d, false)(path, raw); p != nil {
			return p
		}
		*dst = &d
		return nil
	}
}

func keyField(dst *Key) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		if err := dst.UnmarshalJSON(raw); err != nil {
			return []Problem{{Field: path, Message: err.Error()}}
		}
		return nil
	}
}

func stringListField(dst *[]string) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		if err := json.Unmarshal(raw, dst); err != nil {
			return []Problem{{Field: path, Message: "must be a list of strings, got " + jsonKind(raw)}}
		}
		return nil
	}
}

// rawObjectField keeps an object as raw JSON for a later, kind-specific decode.
func rawObjectField(dst *json.RawMessage) fieldDecoder {
	return func(path string, raw json.RawMessage) []Problem {
		if _, err := objectMembers(raw); err != nil {
			return []Problem{{Field: path, Message: err.Error()}}
		}
		*dst = append(json.RawMessage(nil), raw...)
		return nil
	}
}

// unknownFieldMessage names the field and, when one is close, the field
// the author probably meant: "batchsize" is a typo of "batch_size".
func unknownFieldMessage(name string, fields map[string]fieldDecoder) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	if s := closest(name, known); s != "" {
		return fmt.Sprintf("unknown field (did you mean %q?)", s)
	}
	return "unknown field; known fields are " + strings.Join(known, ", ")
}

// closest returns the known name the author probably meant: the same
// letters without separators ("batchsize"), an edit distance of at most a
// third of the name ("paralelism"), or an abbreviation ("max_lag").
func closest(name string, known []string) string {
	squash := func(s string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", len(name)/3+1
	for _, k := range known {
		if squash(k) == squash(name) {
			return k
		}
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" || len(squash(name)) < 4 {
		return best
	}
	for _, k := range known {
		if isSubsequence(squash(name), squash(k)) && (best == "" || len(k) < len(best)) {
			best = k
		}
	}
	return best
}

// isSubsequence reports whether the letters of short appear in long in order.
func isSubsequence(short, long string) bool {
	i := 0
	for j := 0; j < len(long) && i < len(short); j++ {
		if long[j] == short[i] {
			i++
		}
	}
	return i == len(short)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

func isNumber(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && (t[0] == '-' || (t[0] >= '0' && t[0] <= '9'))
}

// jsonKind names the JSON type of raw for messages.
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string " + truncate(string(t), 40)
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "the number " + truncate(string(t), 40)
}

// truncate shortens s to at most n runes, so a message quoting a huge or
// hostile value stays readable.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
