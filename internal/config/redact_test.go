package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchflow/batchflow/internal/config"
)

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://app:" + secret + "@db:5432/app", "postgres://app:xxxxx@db:5432/app"},
		{"postgresql://app:" + secret + "@db/app?sslmode=require", "postgresql://app:xxxxx@db/app?sslmode=require"},
		{"mysql://app:" + secret + "@db:3306/app", "mysql://app:xxxxx@db:3306/app"},
		{"postgres://:" + secret + "@db/app", "postgres://:xxxxx@db/app"},
		{"postgres://app:@db/app", "postgres://app:xxxxx@db/app"},
		// No password: nothing to hide.
		{"postgres://app@db/app", "postgres://app@db/app"},
		{"postgres://db/app", "postgres://db/app"},
		{"sqlite:///var/lib/demo.db", "sqlite:///var/lib/demo.db"},
		{"", ""},
		// Percent-encoded and unencoded special characters in the password.
		{"postgres://app:p%40ss%2Fw@db/app", "postgres://app:xxxxx@db/app"},
		{"postgres://app:p@ss@db/app", "postgres://app:xxxxx@db/app"},
		{"postgres://app:pa/ss@db/app", "postgres://app:xxxxx@db/app"},
		{"postgres://app:pa?ss@db/app", "postgres://app:xxxxx@db/app"},
		{"postgres://app:pa#ss@db/app", "postgres://app:xxxxx@db/app"},
		{"postgres://app:" + secret + "%zz@db/app", "postgres://app:xxxxx@db/app"},
		// Secret query parameters, in any case.
		{"postgres://db/app?sslmode=verify-full&sslpassword=" + secret, "postgres://db/app?sslmode=verify-full&sslpassword=xxxxx"},
		{"postgres://db/app?password=" + secret + "&sslmode=disable", "postgres://db/app?password=xxxxx&sslmode=disable"},
		{"postgres://db/app?PASSWORD=" + secret, "postgres://db/app?PASSWORD=xxxxx"},
		{"mysql://app@db/app?pass=" + secret + "&pwd=" + secret, "mysql://app@db/app?pass=xxxxx&pwd=xxxxx"},
		{"postgres://db/app?Secret=" + secret + "&token=" + secret + "#frag", "postgres://db/app?Secret=xxxxx&token=xxxxx#frag"},
		{"postgres://db/app?passwordx=visible&xpassword=visible", "postgres://db/app?passwordx=visible&xpassword=visible"},
		// Both at once; a query value holding an '@' hides the host, never the secret.
		{"postgres://app:" + secret + "@db/app?password=" + secret, "postgres://app:xxxxx@db/app?password=xxxxx"},
		{"postgres://app@db/app?password=p@" + secret, "postgres://app@db/app?password=xxxxx"},
		{"postgres://app:" + secret + "@db/app?application_name=me@corp", "postgres://app:xxxxx@corp"},
		// Not URLs at all.
		{"app:p://w@db/app", "app:xxxxx@db/app"}, // a "://" inside the password is no scheme
		{"app:" + secret + "@tcp(db:3306)/app", "app:xxxxx@tcp(db:3306)/app"},
		{"host=db user=app password=" + secret + " sslmode=disable", "host=db user=app password=xxxxx sslmode=disable"},
		{"host=db password='" + secret + " with space' sslmode=disable", "host=db password=xxxxx sslmode=disable"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, config.RedactDSN(tt.in))
		})
	}
}

// printedForms renders v every way a program may print it.
func printedForms(t *testing.T, v any) map[string]string {
	t.Helper()
	forms := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%10.200v"} {
		forms[verb] = fmt.Sprintf(verb, v)
	}
	// Nested, as a field of a struct a caller logs or prints.
	forms["nested %+v"] = fmt.Sprintf("%+v", struct{ Config any }{v})
	forms["slice %v"] = fmt.Sprint([]any{v})

	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "value", v)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "value", v)
	forms["slog text"] = text.String()
	forms["slog json"] = js.String()

	b, err := json.Marshal(v)
	require.NoError(t, err)
	forms["json"] = string(b)
	return forms
}

func requireNoSecret(t *testing.T, forms map[string]string, secrets ...string) {
	t.Helper()
	for form, out := range forms {
		for _, s := range secrets {
			require.NotContains(t, out, s, "%s printed a secret: %s", form, out)
		}
	}
}

func TestTargetPrintedFormsAreRedacted(t *testing.T) {
	t.Parallel()
	target, err := config.ParseTarget("main=postgres://app:" + secret + "@db:5432/app?sslpassword=" + secret + "2")
	require.NoError(t, err)
	require.Contains(t, target.DSN(), secret, "the driver still gets the password")

	forms := printedForms(t, target)
	requireNoSecret(t, forms, secret)

	const dsn = "postgres://app:xxxxx@db:5432/app?sslpassword=xxxxx"
	require.Equal(t, "main="+dsn, forms["%v"])
	require.Equal(t, "main="+dsn, forms["%+v"])
	require.Equal(t, `config.Target{Name:"main", Scheme:"postgres", DSN:"`+dsn+`"}`, forms["%#v"])
	require.Equal(t, `"main=`+dsn+`"`, forms["%q"])
	require.Equal(t, `{"name":"main","scheme":"postgres","dsn":"`+dsn+`"}`, forms["json"])
	require.Contains(t, forms["slog text"], `value.name=main value.scheme=postgres value.dsn="`+dsn+`"`)
	require.Contains(t, forms["slog json"], `"value":{"name":"main","scheme":"postgres","dsn":"`+dsn+`"}`)
}

func TestTargetsPrintedFormsAreRedacted(t *testing.T) {
	t.Parallel()
	targets, err := config.ParseTargets([]string{
		"main=postgres://app:" + secret + "@db/app",
		"analytics=mysql://app:" + secret + "@mysql:3306/analytics",
	}, "")
	require.NoError(t, err)

	forms := printedForms(t, targets)
	requireNoSecret(t, forms, secret)

	require.Equal(t, "[main=postgres://app:xxxxx@db/app analytics=mysql://app:xxxxx@mysql:3306/analytics]", forms["%v"])
	require.Equal(t, `config.Targets{config.Target{Name:"main", Scheme:"postgres", DSN:"postgres://app:xxxxx@db/app"}, `+
		`config.Target{Name:"analytics", Scheme:"mysql", DSN:"mysql://app:xxxxx@mysql:3306/analytics"}}`, forms["%#v"])
	require.Equal(t, `[{"name":"main","scheme":"postgres","dsn":"postgres://app:xxxxx@db/app"},`+
		`{"name":"analytics","scheme":"mysql","dsn":"mysql://app:xxxxx@mysql:3306/analytics"}]`, forms["json"])
	require.Contains(t, forms["slog text"], "value.main=postgres://app:xxxxx@db/app value.analytics=mysql://app:xxxxx@mysql:3306/analytics")
	require.Contains(t, forms["slog json"], `"value":{"main":"postgres://app:xxxxx@db/app","analytics":"mysql://app:xxxxx@mysql:3306/analytics"}`)

	// A plain slice of targets goes through each Target's own methods.
	requireNoSecret(t, printedForms(t, []config.Target(targets)), secret)

	b, err := json.Marshal(config.Targets(nil))
	require.NoError(t, err)
	require.JSONEq(t, `[]`, string(b))
}

func TestCommonPrintedFormsAreRedacted(t *testing.T) {
	t.Parallel()
	const (
		natsPassword = "N4tsPassw0rd"
		natsToken    = "T0kenInUrl"
	)
	targets, err := config.ParseTargets([]string{"main=postgres://app:" + secret + "@db/app"}, "")
	require.NoError(t, err)
	c := config.Common{
		NATSURL:      "nats://" + natsToken + "@n1:4222,nats://ops:" + natsPassword + "@n2:4222",
		NATSUser:     "batchflow",
		NATSPassword: natsPassword,
		NATSTLSCA:    "/etc/nats/ca.pem",
		NATSReplicas: 3,
		Prefix:       "bf",
		Targets:      targets,
		LogFormat:    "json",
		LogLevel:     "debug",
	}

	forms := printedForms(t, c)
	requireNoSecret(t, forms, secret, natsPassword, natsToken)

	require.Equal(t, "nats-url=nats://xxxxx@n1:4222,nats://ops:xxxxx@n2:4222 nats-user=batchflow nats-password=xxxxx "+
		"nats-tls-ca=/etc/nats/ca.pem nats-replicas=3 prefix=bf targets=[main=postgres://app:xxxxx@db/app] log-format=json log-level=debug",
		forms["%v"])
	require.Contains(t, forms["%#v"], `NATSPassword:"xxxxx"`)
	require.Contains(t, forms["%#v"], `Targets:config.Targets{config.Target{Name:"main", Scheme:"postgres", DSN:"postgres://app:xxxxx@db/app"}}`)
	require.JSONEq(t, `{
		"nats_url": "nats://xxxxx@n1:4222,nats://ops:xxxxx@n2:4222",
		"nats_user": "batchflow",
		"nats_password": "xxxxx",
		"nats_tls_ca": "/etc/nats/ca.pem",
		"nats_replicas": 3,
		"prefix": "bf",
		"targets": [{"name": "main", "scheme": "postgres", "dsn": "postgres://app:xxxxx@db/app"}],
		"log_format": "json",
		"log_level": "debug"
	}`, forms["json"])
	require.Contains(t, forms["slog text"], "value.nats_password=xxxxx")
	require.Contains(t, forms["slog text"], "value.targets.main=postgres://app:xxxxx@db/app")
	require.Contains(t, forms["slog json"], `"nats_password":"xxxxx"`)

	// An unset password prints as unset, not as "xxxxx".
	c.NATSUser, c.NATSPassword = "", ""
	require.NotContains(t, c.String(), "nats-password")
	require.Contains(t, fmt.Sprintf("%#v", c), `NATSPassword:""`)
}
