package config_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/batchflow/batchflow/internal/config"
)

// FuzzParseTarget assembles NAME=SCHEME://USER:PASSWORD@HOST/db and checks
// that no error and no printed form shows the password.
//
// The password is wrapped in the markers "Pw1" and "Pw2", and the name,
// user and host are kept to lowercase letters, digits and punctuation, so
// the markers can only reach an output through a leak: no message of the
// package contains them. Between the markers the fuzzer puts anything,
// including the characters that break URL parsing ('@', '/', '?', '#',
// '%', ':').
func FuzzParseTarget(f *testing.F) {
	for _, seed := range []struct {
		name, user, password, host string
		scheme                     uint8
	}{
		{"main", "app", "secret", "db:5432", 0},
		{"main", "app", "p@ss/w?rd#x", "db", 0},
		{"main", "app", "%zz", "db", 1},
		{"main", "", ":", "db:3306", 2},
		{"demo", "app", "x", "demo.db", 3},
		{"main", "app", "s;b=sqlite://c", "db", 0},
		{"main", "app", "?token=", "db", 0},
		{"main", "a@b", "://", "h?password=x", 0},
		{"Main", "app", "x", "db", 4},
		{"", "app", "x", "db", 5},
		{"main=x", "app", "12/x", "db", 0},
		{"x://y", "app", "x", "db", 2},
	} {
		f.Add(seed.name, seed.user, seed.password, seed.host, seed.scheme)
	}
	schemes := []string{"postgres://", "postgresql://", "mysql://", "sqlite://", "mongodb://", ""}

	f.Fuzz(func(t *testing.T, name, user, password, host string, scheme uint8) {
		name, user, host = lowercaseOnly(name), lowercaseOnly(user), lowercaseOnly(host)
		password = "Pw1" + password + "Pw2"
		dsn := schemes[int(scheme)%len(schemes)] + user + ":" + password + "@" + host + "/db"
		input := name + "=" + dsn

		outputs := map[string]string{"RedactDSN": config.RedactDSN(dsn)}
		if target, err := config.ParseTarget(input); err != nil {
			outputs["ParseTarget error"] = err.Error()
		} else {
			outputs["String"] = target.String()
			outputs["%#v"] = fmt.Sprintf("%#v", target)
			outputs["%d"] = fmt.Sprintf("%d", target)
			b, err := json.Marshal(target)
			if err != nil {
				t.Fatal(err)
			}
			outputs["json"] = string(b)
		}
		if targets, err := config.ParseTargets([]string{input}, ""); err != nil {
			outputs["--target error"] = err.Error()
		} else {
			outputs["--target"] = targets.String()
		}
		// In BATCHFLOW_TARGETS a raw ';' cuts the entry, and a piece of a
		// password can then be a valid target of its own: a ';' must be
		// percent-encoded there, as documented.
		if !strings.Contains(input, ";") {
			if targets, err := config.ParseTargets(nil, input); err != nil {
				outputs["BATCHFLOW_TARGETS error"] = err.Error()
			} else {
				outputs["BATCHFLOW_TARGETS"] = fmt.Sprintf("%v", targets)
			}
		}

		for form, out := range outputs {
			for _, leak := range []string{password, "Pw1", "Pw2"} {
				if strings.Contains(out, leak) {
					t.Fatalf("%s of %q shows %q: %s", form, input, leak, out)
				}
			}
		}
	})
}

// lowercaseOnly keeps lowercase letters, digits and the punctuation that
// matters to DSN parsing, so the upper-case password markers cannot come
// from anywhere but the password.
func lowercaseOnly(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', strings.ContainsRune(":/@?#%=&;._- ", r):
			return r
		}
		return -1
	}, s)
}
