package batches

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Problem is one thing wrong with a spec.
type Problem struct {
	// Field is the dotted path of the field at fault ("args.updates",
	// "health_check.timeout"); empty for the spec as a whole.
	Field string `json:"field,omitempty"`
	// Message says what is wrong and, where it can, what would be right.
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Message
	}
	return p.Field + ": " + p.Message
}

// ValidationError lists every problem found in a spec. The planner turns it
// into the reason of a migration.rejected event; the CLI prints it.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid migration spec: " + strings.Join(parts, "; ")
}

func invalid(p ...Problem) *ValidationError { return &ValidationError{Problems: p} }

var (
	namePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,99}$`)
	targetPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	identPattern  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

// ValidName reports whether name is a valid migration name. A valid name is
// also a valid NATS subject token and KV key part.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ValidIdentifier reports whether s is a plain SQL identifier: a letter or
// '_' followed by letters, digits or '_', at most 63 characters (the
// Postgres limit). Specs name tables and columns only this way; the sink
// still checks them against the live schema and quotes them.
func ValidIdentifier(s string) bool { return identPattern.MatchString(s) }

// ValidTableName reports whether s is a plain identifier, optionally
// qualified by a schema (or MySQL database): "users", "analytics.events".
func ValidTableName(s string) bool {
	schema, table, qualified := strings.Cut(s, ".")
	if !qualified {
		return ValidIdentifier(s)
	}
	return ValidIdentifier(schema) && ValidIdentifier(table)
}

// Validate checks everything about the spec that needs no database: names,
// identifiers, sizes, durations, policies and the kind's arguments. It
// returns nil or a *ValidationError listing every problem. Zero fields are
// read as their defaults.
func (s Spec) Validate() error {
	s = s.WithDefaults()
	var v validator

	switch {
	case s.Name == "":
		v.add("name", "required")
	case !ValidName(s.Name):
		v.add("name", "%q is not a valid name: use 1 to 100 lowercase letters, digits, '_' or '-', starting with a letter or digit", truncate(s.Name, 120))
	}
	switch {
	case s.Target == "":
		v.add("target", "required: the name of a database configured with --target NAME=DSN")
	case strings.Contains(s.Target, "://"):
		v.add("target", "must name a configured target, not a DSN: credentials never travel in specs")
	case !targetPattern.MatchString(s.Target):
		v.add("target", "%q is not a valid target name: use lowercase letters, digits, '_' or '-'", truncate(s.Target, 80))
	}
	switch {
	case s.Table == "":
		v.add("table", "required")
	case !ValidTableName(s.Table):
		v.add("table", "%q is not a plain table name: use letters, digits and '_', optionally schema-qualified as schema.table", truncate(s.Table, 80))
	}
	if s.BatchColumn != "" && !ValidIdentifier(s.BatchColumn) {
		v.add("batch_column", "%q is not a plain column name: use letters, digits and '_'", truncate(s.BatchColumn, 80))
	}
	if strings.ContainsRune(s.Where, 0) {
		v.add("where", "contains a NUL byte")
	}

	v.checkKeys(s.MinValue, s.MaxValue)
	v.checkSizes(s)
	v.checkDurations(s)

	switch s.OnRowError {
	case RowErrorFail, RowErrorSkip:
	default:
		v.add("on_row_error", "must be %q or %q, got %q", RowErrorFail, RowErrorSkip, truncate(string(s.OnRowError), 40))
	}

	seen := map[string]bool{}
	for i, name := range s.After {
		field := fmt.Sprintf("after[%d]", i)
		switch {
		case !ValidName(name):
			v.add(field, "%q is not a valid migration name", truncate(name, 120))
		case name == s.Name:
			v.add(field, "a migration cannot wait for itself")
		case seen[name]:
			v.add(field, "%q is listed twice", name)
		}
		seen[name] = true
	}

	switch {
	case s.Kind == "":
		v.add("kind", "required")
	default:
		kind, ok := lookupKind(s.Kind)
		if !ok {
			v.add("kind", "unknown kind %q; stock kinds are %s", truncate(s.Kind, 60), strings.Join(StockKinds(), ", "))
			break
		}
		v.problems = append(v.problems, kind.check(s.Args)...)
	}

	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

func (v *validator) checkKeys(lo, hi Key) {
	if lo.IsNull() || hi.IsNull() {
		return
	}
	if lo.IsInt() != hi.IsInt() {
		v.add("max_value", "min_value and max_value must both be integers or both be strings")
		return
	}
	if lo.IsInt() && lo.Compare(hi) > 0 {
		v.add("max_value", "%s is less than min_value %s", hi, lo)
	}
}

func (v *validator) checkSizes(s Spec) {
	v.between("batch_size", s.BatchSize, 1, MaxBatchSize)
	v.between("sub_batch_size", s.SubBatchSize, 1, MaxSubBatchSize)
	if s.SubBatchSize > s.BatchSize && s.BatchSize >= 1 {
		v.add("sub_batch_size", "%d is larger than batch_size %d", s.SubBatchSize, s.BatchSize)
	}
	v.between("parallelism", s.Parallelism, 1, MaxParallelism)
	v.between("max_attempts", s.MaxAttempts, 1, MaxMaxAttempts)
}

func (v *validator) checkDurations(s Spec) {
	v.nonNegative("sub_batch_target", *s.SubBatchTarget)
	v.nonNegative("sub_batch_pause", s.SubBatchPause)
	v.nonNegative("batch_pause", s.BatchPause)
	if s.Throttle != nil {
		v.nonNegative("throttle.max_replication_lag", s.Throttle.MaxReplicationLag)
		if strings.ContainsRune(s.Throttle.Query, 0) {
			v.add("throttle.query", "contains a NUL byte")
		}
	}
	hc := s.HealthCheck
	if hc.Frequency.D() < MinHealthCheck {
		v.add("health_check.frequency", "must be at least %s, got %s", MinHealthCheck, hc.Frequency)
	}
	if hc.Timeout.D() < MinHealthCheck {
		v.add("health_check.timeout", "must be at least %s, got %s", MinHealthCheck, hc.Timeout)
	}
	// A sub-batch is the unit of progress the watchdog sees: a timeout that
	// a healthy sub-batch or pause can exceed would republish live batches.
	if t := *s.SubBatchTarget; hc.Timeout <= t && hc.Timeout.D() >= MinHealthCheck {
		v.add("health_check.timeout", "%s must be longer than sub_batch_target %s, or healthy batches look stalled", hc.Timeout, t)
	}
	if p := s.SubBatchPause; hc.Timeout <= p && hc.Timeout.D() >= MinHealthCheck {
		v.add("health_check.timeout", "%s must be longer than sub_batch_pause %s, or pausing batches look stalled", hc.Timeout, p)
	}
}

type validator struct{ problems []Problem }

func (v *validator) add(field, format string, args ...any) {
	v.problems = append(v.problems, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) between(field string, n, lo, hi int) {
	switch {
	case n < lo:
		v.add(field, "must be at least %d, got %d", lo, n)
	case n > hi:
		v.add(field, "must be at most %d, got %d", hi, n)
	}
}

func (v *validator) nonNegative(field string, d Duration) {
	if d < 0 {
		v.add(field, "must not be negative, got %s", d)
	}
}

// hasProblem reports whether the field already has a problem.
func (v *validator) hasProblem(field string) bool {
	return slices.ContainsFunc(v.problems, func(p Problem) bool { return p.Field == field })
}
