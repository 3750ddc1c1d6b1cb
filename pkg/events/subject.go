package events

import (
	"fmt"
	"regexp"
	"strings"
)

// InvalidToken replaces, in subjects, a migration name that cannot be a
// subject token (a rejected spec named "a.b" or "*").
const InvalidToken = "_invalid"

var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)

// validToken reports whether s can be one subject token: no dots, no
// wildcards, no spaces, nothing a subscriber's filter could misread.
func validToken(s string) bool { return tokenPattern.MatchString(s) }

// MigrationToken is the subject token for a migration name: the name
// itself, or InvalidToken when it cannot be one.
func MigrationToken(migration string) string {
	if validToken(migration) {
		return migration
	}
	return InvalidToken
}

// Subject is where an event of type t about migration is published:
// <prefix>.events.<migration>.<scope>.<event>.
func Subject(prefix, migration string, t Type) string {
	return fmt.Sprintf("%s.events.%s.%s.%s", prefix, MigrationToken(migration), t.Scope(), t.Name())
}

// FilterSubject is the subject filter for events of a migration (empty:
// all) of type t (empty: all types).
func FilterSubject(prefix, migration string, t Type) string {
	m := "*"
	if migration != "" {
		m = MigrationToken(migration)
	}
	if t == "" {
		return fmt.Sprintf("%s.events.%s.*.*", prefix, m)
	}
	return fmt.Sprintf("%s.events.%s.%s.%s", prefix, m, t.Scope(), t.Name())
}

// ParseSubject splits an event subject into its migration token and type.
func ParseSubject(prefix, subject string) (migration string, t Type, err error) {
	rest, ok := strings.CutPrefix(subject, prefix+".events.")
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s.events", subject, prefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("subject %q: want %s.events.<migration>.<scope>.<event>", subject, prefix)
	}
	t = NewType(Scope(parts[1]), parts[2])
	if !validToken(parts[0]) || !t.Valid() {
		return "", "", fmt.Errorf("subject %q is not a batchflow event subject", subject)
	}
	return parts[0], t, nil
}
